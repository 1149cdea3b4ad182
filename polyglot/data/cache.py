"""The on-disk cache: derived files that are costly to make and cheap to keep.

Everything here can be deleted at any time and is rebuilt on demand: the
default vocabulary, per-file corpus statistics, decompressed `.xz` corpora.
The directory is `$POLYGLOT_CACHE` when set, else `~/.cache/polyglot`.
Writes are atomic (`paths.write_bytes`: a temporary file renamed into
place), so processes that build the same entry at once never read a partial
file.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from polyglot import paths

CACHE_ENV = "POLYGLOT_CACHE"


def cache_dir(*parts: str) -> pathlib.Path:
  """`$POLYGLOT_CACHE/<parts>` (default `~/.cache/polyglot/<parts>`), created if missing."""
  root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "polyglot")
  path = pathlib.Path(root, *parts)
  path.mkdir(parents=True, exist_ok=True)
  return path


def file_key(path: str | os.PathLike, *extra: Any) -> str:
  """A key that changes whenever the file does: resolved path (or URL), size, mtime
  (+ `extra`)."""
  path = paths.resolve(path)
  if paths.is_url(path):
    stat = paths.Path(path).stat()  # an object's size and its update time in seconds
    return json.dumps([path, stat.length, stat.mtime, *extra])
  stat = os.stat(path)
  return json.dumps([os.path.realpath(path), stat.st_size, stat.st_mtime_ns, *extra])


def read_json(name: str) -> dict[str, Any]:
  """The JSON object cached under `name` ({} when absent or unreadable)."""
  try:
    return json.loads((cache_dir() / name).read_text(encoding="utf-8"))
  except (FileNotFoundError, json.JSONDecodeError):
    return {}


def update_json(name: str, entries: dict[str, Any]) -> None:
  """Adds `entries` to the JSON object cached under `name`, keeping others' entries."""
  merged = read_json(name)
  merged.update(entries)
  paths.write_bytes(cache_dir() / name, json.dumps(merged, sort_keys=True).encode("utf-8"))
