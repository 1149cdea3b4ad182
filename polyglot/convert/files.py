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

import contextlib
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np

from polyglot import checkpoint, paths
from polyglot.data.vocab import HF_MODEL_FILENAME, Vocabulary
from polyglot.errors import ConversionError

CHECKPOINT_ENTRIES = (checkpoint.SUBDIR, HF_MODEL_FILENAME)
_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def check_output(path: str | os.PathLike, *, overwrite: bool,
                 source: str | os.PathLike) -> str:
  """`path` resolved, if it may be written: not the `source` being converted, not a file, in a
  writable place, and empty or missing unless `overwrite`. Nothing is written yet."""
  resolved = paths.resolve(path)
  if resolved == paths.resolve(source):
    raise ConversionError(f"output directory {resolved} is the input: pass another --output_dir")
  out = paths.Path(resolved)
  if out.exists() and not out.is_dir():
    raise ConversionError(f"output {resolved} is a file: pass a directory as --output_dir")
  reason = paths.why_unwritable(resolved)
  if reason:
    raise ConversionError(f"output directory {resolved} cannot be created ({reason}): pass "
                          "an --output_dir in a writable place")
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


@contextlib.contextmanager
def writing(directory: str) -> Iterator[None]:
  """Turns an OSError of the writes in the block (disk full, a file in the way, permissions)
  into a ConversionError naming `directory`."""
  try:
    yield
  except OSError as e:
    raise ConversionError(f"cannot write the output directory {directory} ({e}): free space "
                          "or pass a writable --output_dir") from None


def save_checkpoint(directory: str, params: Any, vocab: Vocabulary,
                    meta: dict[str, Any]) -> str:
  """Writes `params` as step 0 of `directory/checkpoints` plus the vocabulary file, replacing
  those of an earlier conversion (see `check_output` first).

  The optimizer state is a bare step counter: runs start from such a
  checkpoint through `TrainConfig.init_from`, which reads parameters only.
  """
  with writing(directory):
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
  if not path.exists():
    return {}
  if not path.is_file():
    raise ConversionError(f"{path} is a directory, not a JSON file: restore the file from the "
                          "model's source")
  try:
    value = json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path} is not valid JSON ({e}): restore the file from the "
                          "model's source") from None
  if not isinstance(value, dict):
    raise ConversionError(f"{path} holds {_JSON_KINDS.get(type(value), 'a number')}, not a JSON "
                          "object: restore the file from the model's source")
  return value


def write_json(path: str | os.PathLike, value: Any) -> None:
  paths.write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
