"""Vocabulary extension for new languages, the Glot500 recipe (ImaniGooghari et al., 2023).

    new = vocab.train_from_mixture("new_languages", vocab.VocabConfig(vocab_size=32000))
    extend_checkpoint("ckpt/xlmr-base", new, "ckpt/xlmr-ext", ExtensionConfig(init="mean"))

then continue MLM pretraining from the output with gin/runs/continue_from_hf.gin.

1. A SentencePiece model trained on the new languages' text (`new`).
2. `merge`: its pieces that the base model lacks are appended to the base
   SentencePiece model with the log-probabilities the new model gave them
   (Glot500's merge keeps them too). Base pieces keep their ids and scores and
   polyglot puts `<mask>` after the last piece, so every old id keeps its
   meaning and only `<mask>` moves, to the new last id.
3. `resize`: the word embeddings and the MLM decoder bias grow alike: old rows
   unchanged, `<mask>`'s row moved to the new last id, new rows set by
   `ExtensionConfig.init`:
   - "normal": N(0, init_std^2) with bias 0; std 0.02, XLM-R's
     initializer_range, as Glot500;
   - "mean": the mean of the rows (and biases) of the piece's segmentation
     under the base vocabulary (its own characters, no word-start prefix
     added, `<unk>` left out); a piece made only of characters the base does
     not know gets "normal".

Shapes: v=old vocabulary, n=new pieces, d=embed.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import NamedTuple, Sequence

import jax
import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from polyglot import api, paths
from polyglot.convert import files, hf
from polyglot.data.vocab import WORD_START, Vocabulary
from polyglot.errors import ConfigError, ConversionError, DataError

INITS = ("normal", "mean")
_NORMAL = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
_SPM_UNK = 0  # SentencePiece's own <unk> id in XLM-R's layout


@dataclasses.dataclass(frozen=True)
class ExtensionConfig:
  """How new rows of the embeddings and decoder bias start."""
  init: str = "normal"               # one of INITS
  init_std: float = 0.02             # "normal" (and "mean"'s fallback): XLM-R's initializer_range
  seed: int = 0

  def __post_init__(self):
    if self.init not in INITS:
      raise ConfigError(f"ExtensionConfig.init={self.init!r} is invalid: use one of {INITS}")
    if not (self.init_std > 0 and math.isfinite(self.init_std)):
      raise ConfigError(f"ExtensionConfig.init_std={self.init_std} is invalid: use > 0 (0.02)")
    if self.seed < 0:
      raise ConfigError(f"ExtensionConfig.seed={self.seed} is invalid: use an integer >= 0")


class Extended(NamedTuple):
  directory: str                 # resolved: an absolute local path or a URL
  added: int                     # pieces appended
  vocab_size: int                # ids of the extended model


def _proto(vocab: Vocabulary) -> sentencepiece_model_pb2.ModelProto:
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(vocab.model_bytes)
  return proto


def merge(base: Vocabulary, new: Vocabulary) -> tuple[Vocabulary, list[str]]:
  """`base` with the normal pieces of `new` that it lacks appended; returns (merged, added)."""
  proto = _proto(base)
  known = {p.piece for p in proto.pieces}
  added = [p for p in _proto(new).pieces if p.type == _NORMAL and p.piece not in known]
  if not added:
    raise DataError(f"vocabulary {new.name} adds no piece to {base.name}: train it on text of "
                    "the new languages")
  for p in added:
    proto.pieces.add(piece=p.piece, score=p.score, type=_NORMAL)
  proto.trainer_spec.vocab_size = len(proto.pieces)
  return Vocabulary(proto.SerializeToString()), [p.piece for p in added]


def segment(base: Vocabulary, pieces: Sequence[str]) -> list[list[int]]:
  """Each piece's polyglot ids under `base`, from its own characters (no word-start prefix
  added, whitespace kept), without `<unk>`."""
  proto = _proto(base)
  proto.normalizer_spec.add_dummy_prefix = False
  proto.normalizer_spec.remove_extra_whitespaces = False
  sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
  # SentencePiece id i >= 3 is polyglot id i + 1 (polyglot/data/vocab.py).
  return [[i + 1 for i in sp.encode(p.replace(WORD_START, " ")) if i != _SPM_UNK]
          for p in pieces]


def new_rows(word: np.ndarray, bias: np.ndarray, base: Vocabulary, added: Sequence[str],
             cfg: ExtensionConfig) -> tuple[np.ndarray, np.ndarray]:
  """Rows [n, d] and biases [n] for the `added` pieces (see the module docstring)."""
  rng = np.random.default_rng(cfg.seed)
  rows = rng.normal(0.0, cfg.init_std, (len(added), word.shape[1])).astype(np.float32)
  biases = np.zeros(len(added), np.float32)
  if cfg.init == "mean":
    for n, ids in enumerate(segment(base, added)):
      if ids:
        rows[n], biases[n] = word[ids].mean(0), bias[ids].mean()
  return rows, biases


def _grow(x: np.ndarray, new: np.ndarray) -> np.ndarray:
  """[v, ...] -> [v + n, ...]: rows before `<mask>` (the last), `new`, then `<mask>`'s row."""
  return np.concatenate([x[:-1], new, x[-1:]]).astype(x.dtype)


def resize(params: hf.Params, base: Vocabulary, added: Sequence[str],
           cfg: ExtensionConfig) -> hf.Params:
  """A MaskedLM's parameters with word embeddings and decoder bias grown by `added` pieces."""
  params = jax.tree.map(np.asarray, params)  # new containers; the caller's tree is untouched
  embeddings, head = params["encoder"]["embeddings"], params["lm_head"]
  rows, biases = new_rows(embeddings["word"], head["bias"], base, added, cfg)
  embeddings["word"] = _grow(embeddings["word"], rows)
  head["bias"] = _grow(head["bias"], biases)
  return params


def load_base(checkpoint_dir: str | os.PathLike, step: int | None = None) -> api.Loaded:
  """The masked_lm checkpoint to extend; tools load it before training a vocabulary, so that
  a wrong checkpoint is refused first."""
  loaded = api.load(os.fspath(checkpoint_dir), step)
  kind = loaded.meta.get("model_kind", "masked_lm")
  if kind != "masked_lm":
    raise ConversionError(f"checkpoint {checkpoint_dir} holds a {kind} model: vocabulary "
                          "extension prepares MLM pretraining; extend a masked_lm checkpoint")
  return loaded


def extend(base: api.Loaded, base_dir: str | os.PathLike, new: Vocabulary, out: str,
           cfg: ExtensionConfig = ExtensionConfig()) -> Extended:
  """Writes step 0 of a checkpoint in `out` (checked by `files.check_output`): the model
  `base` (loaded from `base_dir`) with `new`'s pieces."""
  merged, added = merge(base.vocab, new)
  # An RTD checkpoint's generator and detection head stay behind: the extended model is the
  # encoder and its MLM head (an RTD run from it starts a fresh generator).
  params = resize({k: v for k, v in hf.params_of(base.model).items()
                   if k in ("encoder", "lm_head")}, base.vocab, added, cfg)
  model_cfg = base.config.replace(vocab_size=merged.vocab_size)
  meta = {"model_kind": "masked_lm", "model_config": model_cfg.to_dict(),
          "origin": (f"{paths.resolve(base_dir)} step {base.step} with "
                     f"{len(added)} pieces of {new.name} ({cfg.init} init)")}
  if "objectives" in base.meta:  # whether its MLM head was trained (api.mlm_head_trained)
    meta["objectives"] = base.meta["objectives"]
  files.save_checkpoint(out, params, merged, meta)
  return Extended(out, len(added), merged.vocab_size)


def extend_checkpoint(checkpoint_dir: str | os.PathLike, new: Vocabulary,
                      output_dir: str | os.PathLike, cfg: ExtensionConfig = ExtensionConfig(),
                      *, step: int | None = None, overwrite: bool = False) -> Extended:
  """Writes step 0 of a checkpoint: the MLM model of `checkpoint_dir` with `new`'s pieces."""
  out = files.check_output(output_dir, overwrite=overwrite, source=checkpoint_dir)
  return extend(load_base(checkpoint_dir, step), checkpoint_dir, new, out, cfg)
