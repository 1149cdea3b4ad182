"""`python -m polyglot.fill_mask`: the model's top-k tokens for each `<mask>` of a text.

    python -m polyglot.fill_mask --checkpoint_dir=workdir/demo "Habari ya <mask>." --top_k=5

Ids and scores are those of Hugging Face's `pipeline("fill-mask")` on the
model exported by tools/convert_to_hf.py (tests/test_fill_mask.py): `<mask>`
is a token of its own, each stretch of text around it is encoded alone
(SentencePiece gives it its word-start prefix, as XLM-R's tokenizer does),
`<s>` and `</s>` enclose the whole; a score is the softmax probability of the
token at the mask's position.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import NamedTuple, Sequence

import jax
import numpy as np
from flax import nnx

from polyglot import api, paths
from polyglot.convert import cli
from polyglot.errors import ConfigError

MASK = "<mask>"  # polyglot.data.vocab.MASK_PIECE; not imported, as that loads TensorFlow


class Prediction(NamedTuple):
  token_id: int
  token: str                     # the piece as text
  score: float                   # softmax probability at the mask's position
  sequence: str                  # the text with this token in the mask's place


def check_request(text: str, top_k: int) -> None:
  """ConfigError unless `text` is UTF-8 with a `<mask>` and `top_k` >= 1."""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:  # bytes of another encoding arrive as lone surrogates
    raise ConfigError(f"text {text!r} is not UTF-8 (character {e.start}): pass UTF-8 text, e.g. "
                      "re-encode it with iconv -t UTF-8 or use a UTF-8 locale") from None
  if MASK not in text:
    raise ConfigError(f"text {text!r} has no {MASK}: put {MASK} where a token should be "
                      "predicted")
  if top_k < 1:
    raise ConfigError(f"top_k={top_k} is invalid: use >= 1")


def encode(vocab, text: str) -> list[int]:
  """`<s>`, the pieces of each stretch between masks with `<mask>` between them, `</s>`."""
  ids = [vocab.bos_id]
  for i, part in enumerate(text.split(MASK)):
    if i:
      ids.append(vocab.mask_id)
    ids += vocab.encode(part)
  return ids + [vocab.eos_id]


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, ids: jax.Array) -> jax.Array:
  """ids: [1, l] -> float32 logits [l, v]."""
  return nnx.merge(graphdef, state)(ids)[0][0]


def predict(loaded, text: str, top_k: int = 5) -> list[list[Prediction]]:
  """Top-k predictions for each `<mask>` of `text`, in text order; `loaded` is `polyglot.load`'s.

  The ids are padded to the model's max_len (padding is masked out), so one compiled
  forward pass serves every text.
  """
  check_request(text, top_k)
  kind = loaded.meta.get("model_kind", "masked_lm")
  if kind != "masked_lm":
    raise ConfigError(f"the checkpoint holds a {kind} model: fill-mask needs a masked_lm "
                      "checkpoint")
  if not api.mlm_head_trained(loaded.meta):
    raise ConfigError("the checkpoint was pretrained without MLM or TLM (replaced-token "
                      "detection alone), so its MLM head is untrained: fill-mask needs a "
                      "checkpoint trained with MLM or TLM in RunConfig.objectives")
  vocab = loaded.vocab
  ids = encode(vocab, text)
  if len(ids) > loaded.config.max_len:
    raise ConfigError(f"text is {len(ids)} tokens with <s> and </s>, the model takes at most "
                      f"{loaded.config.max_len}: shorten it")
  padded = np.full((1, loaded.config.max_len), vocab.pad_id, np.int32)
  padded[0, :len(ids)] = ids
  logits = np.asarray(_logits(*nnx.split(loaded.model), padded), np.float64)  # [max_len, v]
  out = []
  for pos in np.flatnonzero(np.asarray(ids) == vocab.mask_id):
    probs = np.exp(logits[pos] - logits[pos].max())
    probs /= probs.sum()
    top = np.argsort(-probs, kind="stable")[:top_k]
    out.append([Prediction(int(t), vocab.decode([t]), float(probs[t]),
                           vocab.decode(ids[:pos] + [int(t)] + ids[pos + 1:])) for t in top])
  return out


def report(text: str, predictions: list[list[Prediction]]) -> str:
  lines = [text]
  for i, preds in enumerate(predictions, 1):
    lines.append(f"{MASK} {i} of {len(predictions)}:")
    lines += [f"  {p.score:.4f}  {p.token!r:<16} {p.sequence}" for p in preds]
  return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
  check_request(args.text, args.top_k)  # before the model loads
  from polyglot import api  # pylint: disable=g-import-not-at-top
  return report(args.text, predict(api.load(args.checkpoint_dir, args.step), args.text,
                                   args.top_k))


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__)
  p.add_argument("text", help=f"text with one or more {MASK}")
  p.add_argument("--checkpoint_dir", "--checkpoint-dir", type=paths.resolve, required=True,
                 help="a workdir or its checkpoints/")
  p.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
  p.add_argument("--top_k", "--top-k", type=int, default=5, help="predictions per mask")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  return cli.main(parser(), run, argv)


if __name__ == "__main__":
  sys.exit(main())
