"""A local Hugging Face XLM-R directory -> a polyglot checkpoint (`tools/convert_from_hf.py`).

    import_hf("models/xlm-roberta-base", "ckpt/xlmr-base")

then continue MLM pretraining from it with `gin/runs/continue_from_hf.gin`.

Reads `config.json` (model_type `xlm-roberta`), the weights and the
vocabulary `sentencepiece.bpe.model`. Weights are `model.safetensors`, or
sharded safetensors with their `.index.json`, or else a PyTorch
`pytorch_model.bin` (sharded likewise) read by `torch.load(weights_only=True)`,
which rebuilds tensors and never runs pickled code. The vocabulary must have
XLM-R's layout (polyglot/data/vocab.py) and agree with `config.json` and the
tokenizer files. The head the weights carry (MLM, sequence or token
classification, QA) becomes the checkpoint's model kind; floating tensors
become float32. Output: step 0 of a polyglot checkpoint (polyglot/convert/files.py).
Both directories may be local or URLs (`polyglot.paths`).
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any, Callable, NamedTuple

from polyglot import paths
from polyglot.convert import files, hf, tokenizer
from polyglot.data.vocab import HF_MODEL_FILENAME, Vocabulary
from polyglot.errors import ConversionError, DataError
from polyglot.models import EncoderConfig

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PYTORCH = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"
CLASSIFIERS = ("sequence_classification", "token_classification")


class Imported(NamedTuple):
  directory: str                 # resolved: an absolute local path or a URL
  kind: str                      # polyglot model kind (masked_lm, ...)
  config: EncoderConfig


def import_hf(hf_dir: str | os.PathLike, output_dir: str | os.PathLike, *,
              overwrite: bool = False) -> Imported:
  """Converts the XLM-R model in `hf_dir` into step 0 of a polyglot checkpoint in `output_dir`."""
  hf_dir = paths.Path(paths.resolve(hf_dir))
  if not hf_dir.is_dir():
    problem = "is a file" if hf_dir.exists() else "does not exist"
    raise ConversionError(f"Hugging Face directory {hf_dir} {problem}: pass a local folder "
                          f"holding {CONFIG}, {SAFETENSORS} and {HF_MODEL_FILENAME}")
  out = files.check_output(output_dir, overwrite=overwrite, source=hf_dir)
  hf_config = read_config(hf_dir)
  cfg = hf.config_from_hf(hf_config, source=str(hf_dir / CONFIG))
  vocab = read_vocabulary(hf_dir, cfg)
  weights, origins = read_weights(hf_dir)
  state = hf.normalize_names(weights)
  kind = hf.detect_head(state)
  if kind == "encoder":
    raise ConversionError(f"the weights in {hf_dir} are a bare XLMRobertaModel without a head; "
                          "polyglot checkpoints hold a model with a head: convert an "
                          "XLMRobertaForMaskedLM (or a fine-tuned XLMRobertaFor*) instead")
  meta = {"model_kind": kind, "model_config": cfg.to_dict(),
          "origin": f"converted from Hugging Face {hf_dir}"}
  labels = read_labels(hf_config, hf_dir) if kind in CLASSIFIERS else None
  if labels:
    meta["labels"] = labels
  params = hf.from_hf(state, cfg, kind, num_labels=len(labels) if labels else None,
                      origins=origins)
  files.save_checkpoint(out, params, vocab, meta)
  return Imported(out, kind, cfg)


def read_config(hf_dir: paths.Path) -> dict[str, Any]:
  config = files.read_json(hf_dir / CONFIG)
  if not config:
    raise ConversionError(f"{hf_dir} has no {CONFIG}: pass the folder of a saved "
                          "XLMRobertaFor* model (save_pretrained writes it)")
  if config.get("model_type") != "xlm-roberta":
    raise ConversionError(f"{hf_dir / CONFIG} describes a {config.get('model_type')!r} model; "
                          "only XLM-R models (model_type 'xlm-roberta') convert")
  return config


def read_vocabulary(hf_dir: paths.Path, cfg: EncoderConfig) -> Vocabulary:
  """The directory's SentencePiece model, checked for XLM-R's layout, as a Vocabulary."""
  path = hf_dir / HF_MODEL_FILENAME
  if not path.is_file():
    raise ConversionError(f"{hf_dir} has no {HF_MODEL_FILENAME}: polyglot's vocabulary is "
                          "XLM-R's SentencePiece model (tokenizer.json alone does not convert); "
                          "copy it from the model's source")
  vocab = Vocabulary(path.read_bytes(), name=str(path))
  try:
    size = vocab.vocab_size  # parses the model and checks its special ids
  except DataError as e:
    raise ConversionError(f"{path} is not an XLM-R tokenizer: {e}") from None
  if size != cfg.vocab_size:
    raise ConversionError(f"{path} gives {size} ids (its pieces, <pad> and a final <mask>), "
                          f"{CONFIG} says vocab_size={cfg.vocab_size}: the tokenizer does not "
                          "have XLM-R's layout (<mask> last) or belongs to another model")
  tokenizer.check(hf_dir, vocab)
  return vocab


def read_labels(hf_config: dict[str, Any], hf_dir: paths.Path) -> list[str]:
  """Label names in id order, from `id2label` (JSON keys are strings)."""
  id2label = hf_config.get("id2label") or {}
  try:
    labels = [str(id2label[str(i)]) for i in range(len(id2label))]
  except (KeyError, TypeError):  # TypeError: not a JSON object
    labels = []
  if not labels:
    raise ConversionError(f"{hf_dir / CONFIG} has id2label {id2label}: a classification model "
                          "needs its labels numbered 0..n-1; fix id2label")
  return labels


def read_weights(hf_dir: paths.Path) -> tuple[hf.StateDict, dict[str, str]]:
  """The state dict of `hf_dir` (safetensors first, PyTorch pickles of tensors otherwise) and
  the file each tensor came from."""
  for name, reader in ((SAFETENSORS, _read_safetensors), (PYTORCH, _read_pytorch)):
    if (hf_dir / name).is_file():
      return _read_files([hf_dir / name], reader)
    index = hf_dir / (name + INDEX_SUFFIX)
    if index.is_file():
      return _read_files(_shards(index), reader)
  raise ConversionError(f"{hf_dir} holds no weights: expected {SAFETENSORS} (or {PYTORCH}, or "
                        f"shards with their {INDEX_SUFFIX})")


def _shards(index: paths.Path) -> list[paths.Path]:
  """The shard files a sharded checkpoint's index lists, each checked to be there."""
  weight_map = files.read_json(index).get("weight_map", {})
  if not isinstance(weight_map, dict) or not all(isinstance(v, str)
                                                 for v in weight_map.values()):
    raise ConversionError(f"{index} has a weight_map that is not tensor name -> shard file "
                          "name: restore the file")
  shards = sorted(set(weight_map.values()))
  if not shards:
    raise ConversionError(f"{index} lists no shards in its weight_map: restore the file")
  for shard in shards:
    if not (index.parent / shard).is_file():
      raise ConversionError(f"{index} lists {shard}, which is missing: copy every shard")
  return [index.parent / shard for shard in shards]


def _read_files(weight_files: list[paths.Path], reader: Callable[[paths.Path], hf.StateDict]
                ) -> tuple[hf.StateDict, dict[str, str]]:
  state: hf.StateDict = {}
  origins: dict[str, str] = {}
  for path in weight_files:
    tensors = reader(path)
    state.update(tensors)
    origins.update(dict.fromkeys(tensors, str(path)))
  return state, origins


def _numpy(tensors) -> hf.StateDict:
  """torch tensors -> numpy; floating ones as float32 (polyglot's parameter dtype)."""
  import torch  # pylint: disable=g-import-not-at-top
  return {k: (v.to(torch.float32) if v.is_floating_point() else v).numpy()
          for k, v in tensors.items()}


def _read_safetensors(path: paths.Path) -> hf.StateDict:
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.torch import load, load_file  # pylint: disable=g-import-not-at-top
  try:
    if paths.is_url(path):
      return _numpy(load(path.read_bytes()))
    return _numpy(load_file(os.fspath(path)))
  except (SafetensorError, OSError) as e:
    raise ConversionError(f"{path} is not a readable safetensors file ({e}): copy it "
                          "again") from None


def _read_pytorch(path: paths.Path) -> hf.StateDict:
  import torch  # pylint: disable=g-import-not-at-top
  try:
    state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    reason = _unpickling_reason(e)
    if "GLOBAL" not in str(e):  # no code or class refused: the bytes are damaged
      raise ConversionError(f"{path} is not a readable PyTorch state dict ({reason}): copy it "
                            "again") from None
    raise ConversionError(f"{path} holds objects other than tensors, which polyglot never "
                          f"unpickles ({reason}): convert it to safetensors with a tool you "
                          "trust") from None
  except (RuntimeError, EOFError, OSError) as e:
    raise ConversionError(f"{path} is not a readable PyTorch state dict ({e}): copy it "
                          "again") from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise ConversionError(f"{path} is not a state dict of tensors: pass the weights that "
                          "save_pretrained writes")
  return _numpy(state)


def _unpickling_reason(e: pickle.UnpicklingError) -> str:
  """The line of torch's weights-only refusal that says what it refused: the GLOBAL (code or a
  class) it would not load, else the opcode it could not read."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  refused = [l for l in lines if "GLOBAL" in l]
  if refused:
    return refused[0].removeprefix("WeightsUnpickler error: ").split(". Please")[0]
  boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
  return next((l for l in lines if not l.startswith(boilerplate)), lines[0] if lines else "")
