"""The on-disk cache: derived files that are costly to make and cheap to keep.

Everything here can be deleted at any time and is rebuilt on demand: the
default vocabulary, per-file corpus statistics, decompressed `.xz` corpora.
The directory is `$POLYGLOT_CACHE` when set, else `~/.cache/polyglot`.
Writes are atomic (a temporary file renamed into place), so processes that
build the same entry at once never read a partial file.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

CACHE_ENV = "POLYGLOT_CACHE"


def cache_dir(*parts: str) -> pathlib.Path:
  """`$POLYGLOT_CACHE/<parts>` (default `~/.cache/polyglot/<parts>`), created if missing."""
  root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "polyglot")
  path = pathlib.Path(root, *parts)
  path.mkdir(parents=True, exist_ok=True)
  return path


def write_atomic(path: pathlib.Path, data: bytes) -> None:
  """Writes `data` to `path` so that readers see the old file or the whole new one."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; cache entries are shared files
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def file_key(path: pathlib.Path, *extra: Any) -> str:
  """A key that changes whenever the file does: resolved path, size, mtime (+ `extra`)."""
  stat = path.stat()
  return json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, *extra])


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
  write_atomic(cache_dir() / name, json.dumps(merged, sort_keys=True).encode("utf-8"))
