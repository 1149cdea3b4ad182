"""A polyglot checkpoint -> a Hugging Face model directory (`tools/convert_to_hf.py`).

    export_checkpoint("workdir/demo", "hf/demo")
    AutoModelForMaskedLM.from_pretrained("hf/demo")     # or pipeline("fill-mask", model=...)

The directory holds `config.json` (XLM-R's values written out, `architectures`,
`id2label` for classification heads), `model.safetensors` (float32, every
tensor of the `XLMRobertaFor*` state dict; for MLM the decoder tied to the
word embeddings is stored too, so loaders that do not tie weights read the
same model) and the tokenizer files (polyglot/convert/tokenizer.py). An MoE
checkpoint has no transformers class and is refused. A checkpoint pretrained
with replaced-token detection alone (objectives/rtd.py) exports its
discriminator as `XLMRobertaModel`, the encoder without a head: its MLM head
was never trained, and transformers has no XLM-R class for the detection head
(`ElectraForPreTraining` numbers positions from 0, XLM-R from pad_id + 1), which
stays in the polyglot checkpoint with the generator.
"""
from __future__ import annotations

import os
import pathlib
from typing import NamedTuple

from polyglot import api, paths
from polyglot.convert import files, hf, tokenizer
from polyglot.errors import ConversionError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ENTRIES = (CONFIG, WEIGHTS, *tokenizer.FILES)


class Exported(NamedTuple):
  directory: str                 # resolved: an absolute local path or a URL
  architecture: str              # the XLMRobertaFor* class
  step: int                      # the checkpoint step exported
  vocab_size: int


def export_checkpoint(checkpoint_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
                      step: int | None = None, overwrite: bool = False) -> Exported:
  """Writes the newest (or `step`) checkpoint of `checkpoint_dir` as an HF model directory."""
  out = files.check_output(output_dir, overwrite=overwrite, source=checkpoint_dir)
  loaded = api.load(os.fspath(checkpoint_dir), step)
  cfg, kind = loaded.config, loaded.meta.get("model_kind", "masked_lm")
  if cfg.moe is not None:
    raise ConversionError(f"checkpoint {checkpoint_dir} is a Mixture-of-Experts model "
                          f"({cfg.moe.num_experts} experts): transformers has no class for it; "
                          "only dense checkpoints export to XLMRobertaFor*")
  if loaded.vocab.vocab_size != cfg.vocab_size:
    raise ConversionError(f"checkpoint {checkpoint_dir} holds a {loaded.vocab.vocab_size}-id "
                          f"vocabulary for a {cfg.vocab_size}-id model: it is inconsistent; "
                          "export a checkpoint written by polyglot.train or a polyglot tool")
  if kind == "masked_lm" and not api.mlm_head_trained(loaded.meta):
    kind = "encoder"  # RTD alone trained no MLM head: the encoder is the model
  state = hf.to_hf(hf.params_of(loaded.model), cfg, kind)
  labels = loaded.meta.get("labels")
  with files.writing(out):
    files.clear_output(out, ENTRIES)
    with paths.staged_dir(out) as local:
      local = pathlib.Path(local)
      write_config(local, hf.config_to_hf(cfg, kind, dict(enumerate(labels)) if labels else None))
      write_weights(local / WEIGHTS, state)
      tokenizer.save(loaded.vocab, local, cfg.max_len)
  return Exported(out, hf.architecture(kind), loaded.step, cfg.vocab_size)


def write_config(directory: pathlib.Path, hf_config: dict) -> None:
  """`config.json` through transformers' own class (it adds the fields its loaders expect)."""
  from transformers import XLMRobertaConfig  # pylint: disable=g-import-not-at-top
  XLMRobertaConfig(**hf_config).save_pretrained(str(directory))


def write_weights(path: pathlib.Path, state: hf.StateDict) -> None:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  # "format": "pt" marks a PyTorch state dict, as transformers writes it (version 4 refuses
  # files without it).
  save_file(state, str(path), metadata={"format": "pt"})
