"""Converters' files: output directories, step-0 polyglot checkpoints, JSON.

A converted checkpoint (`tools/convert_from_hf.py`, `tools/extend_vocab.py`)
is a workdir-shaped directory that `polyglot.load` and
`TrainConfig.init_from` read:

  <output_dir>/checkpoints/0/           params, vocabulary, meta (no optimizer state)
  <output_dir>/sentencepiece.bpe.model  the vocabulary again, for a mixture's
                                        `vocabulary` binding in gin

Directories may be local (relative ones resolved against the working
directory) or URLs (`polyglot.paths`).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from polyglot import checkpoint, paths
from polyglot.data.vocab import HF_MODEL_FILENAME, Vocabulary
from polyglot.errors import ConversionError

CHECKPOINT_ENTRIES = (checkpoint.SUBDIR, HF_MODEL_FILENAME)


def check_output(path: str | os.PathLike, *, overwrite: bool,
                 source: str | os.PathLike) -> str:
  """`path` resolved, if it may be written: not the `source` being converted, not a file, and
  empty or missing unless `overwrite`. Nothing is written yet."""
  resolved = paths.resolve(path)
  if resolved == paths.resolve(source):
    raise ConversionError(f"output directory {resolved} is the input: pass another --output_dir")
  out = paths.Path(resolved)
  if out.exists() and not out.is_dir():
    raise ConversionError(f"output {resolved} is a file: pass a directory as --output_dir")
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise ConversionError(f"output directory {resolved} is not empty: pass --overwrite to "
                          "replace its files, or choose an empty directory")
  return resolved


def clear_output(path: str, entries: Sequence[str]) -> None:
  """Creates `path`, removing the `entries` a converter writes (other files stay)."""
  for name in entries:
    entry = paths.Path(path) / name
    if entry.is_dir():
      entry.rmtree()
    elif entry.exists():
      entry.unlink()
  paths.Path(path).mkdir(parents=True, exist_ok=True)


def save_checkpoint(directory: str, params: Any, vocab: Vocabulary,
                    meta: dict[str, Any]) -> str:
  """Writes `params` as step 0 of `directory/checkpoints` plus the vocabulary file, replacing
  those of an earlier conversion (see `check_output` first).

  The optimizer state is a bare step counter: runs start from such a
  checkpoint through `TrainConfig.init_from`, which reads parameters only.
  """
  clear_output(directory, CHECKPOINT_ENTRIES)
  writer = checkpoint.Checkpointer(paths.join(directory, checkpoint.SUBDIR),
                                   checkpoint.CheckpointConfig(async_save=False))
  try:
    writer.save(0, params=params, opt_state={"step": np.int32(0)}, vocab=vocab.model_bytes,
                meta=meta, data=None)
    writer.wait()
  finally:
    writer.close()
  vocab.save(directory)
  return directory


def read_json(path: str | os.PathLike) -> dict[str, Any]:
  """The JSON object in `path` (local or a URL); {} when the file is absent."""
  path = paths.Path(paths.resolve(path))
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path} is not valid JSON ({e}): restore the file from the "
                          "model's source") from None


def write_json(path: str | os.PathLike, value: Any) -> None:
  paths.write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
