"""User paths: local folders and bucket URLs, the one place that handles them.

Every path a user gives (a flag, a gin value, `polyglot.load`'s argument) is
a local path, relative or absolute, or a URL (`gs://bucket/run`, or any other
scheme etils.epath supports). Entry points call `resolve` once: a relative
path becomes absolute against the working directory, a URL stays as written.
Everything after that reads and writes through `Path` (etils.epath, the path
library Orbax itself uses), so one code path serves a laptop and a bucket:

    workdir = paths.resolve("workdir/demo")          # "/home/me/polyglot/workdir/demo"
    paths.write_text(paths.join(workdir, "config.gin"), text)   # atomic, local or remote

Remote paths go through fsspec (gcsfs for `gs://`), selected by
`EPATH_USE_TF=false` in `polyglot._env`: fsspec honours the standard endpoint
setting of an emulator (`STORAGE_EMULATOR_HOST`), TensorFlow's GCS client does
not. Directory listings are not cached, since other writers (Orbax's
TensorStore, the other hosts) add files behind a cache's back. TensorFlow
still reads training text and TFDS data itself (tf.data opens `gs://` paths
with its own GCS client). Libraries that write only local files (transformers,
safetensors) write into a local staging folder that is uploaded afterwards
(`staged_dir`).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator

from polyglot import _env  # noqa: F401  (EPATH_USE_TF before epath is imported)

import fsspec
from etils import epath

Path = epath.Path
PathLike = str | os.PathLike

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

# Other processes and libraries write into the same buckets: list them afresh every time.
for _protocol in ("gs", "gcs", "s3"):
  fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)


def is_url(path: PathLike) -> bool:
  """`gs://b/x`, `s3://...`: a remote path (not resolved against the working directory)."""
  return bool(_URL.match(os.fspath(path)))


def resolve(path: PathLike) -> str:
  """A local path made absolute (`~` expanded, against the working directory); a URL as given.

  Idempotent: entry points call it once, library functions may call it again.
  """
  path = os.fspath(path)
  if is_url(path):
    return path.rstrip("/")
  return os.path.abspath(os.path.expanduser(path))


def join(base: PathLike, *parts: str) -> str:
  """`base/part/...` as a string, for a URL or a local path alike."""
  return os.fspath(Path(os.fspath(base)).joinpath(*parts))


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `path` so that a reader sees the old content or the whole new one.

  Locally a temporary file is renamed into place; an object store replaces an
  object in one request.
  """
  path = resolve(path)
  if is_url(path):
    Path(path).write_bytes(data)
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes the file private
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_text(path: PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


class TextAppender:
  """Lines appended to a text file that may live in a bucket.

  Object stores cannot append: a remote file is kept in memory (its earlier
  content first, so a resumed run continues it) and rewritten whole, at most
  every `remote_flush_s` seconds and on `close`. A local file is appended to
  and flushed on every `flush`.
  """

  def __init__(self, path: PathLike, *, remote_flush_s: float = 30.0):
    self.path = resolve(path)
    self.remote = is_url(self.path)
    self.remote_flush_s = remote_flush_s
    if self.remote:
      p = Path(self.path)
      self._text = p.read_text(encoding="utf-8") if p.exists() else ""
      self._flushed = time.monotonic()
      self._dirty = False
    else:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      self._file = open(self.path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write(self, text: str) -> None:
    if self.remote:
      self._text += text
      self._dirty = True
    else:
      self._file.write(text)

  def flush(self, force: bool = False) -> None:
    if not self.remote:
      self._file.flush()
    elif self._dirty and (force or time.monotonic() - self._flushed >= self.remote_flush_s):
      Path(self.path).write_text(self._text, encoding="utf-8")
      self._flushed, self._dirty = time.monotonic(), False

  def close(self) -> None:
    if self.remote:
      self.flush(force=True)
    else:
      self._file.close()


def why_unwritable(path: str) -> str | None:
  """Why the local `path` (a file or a directory to write) cannot be written, or None.

  The write starts in `path` itself when it is a directory, else in its nearest existing
  ancestor (the missing directories below it are created): that must be a writable
  directory. URLs are left to the write itself.
  """
  if is_url(path):
    return None
  path = resolve(path)
  start = path if os.path.isdir(path) else os.path.dirname(path)
  while not os.path.exists(start):
    start = os.path.dirname(start)
  if not os.path.isdir(start):
    return f"{start} is a file, not a directory"
  if not os.access(start, os.W_OK | os.X_OK):
    return f"directory {start} is not writable"
  return None


def files_under(folder: PathLike) -> Iterator[Path]:
  """Every file below `folder`, depth first, in name order (none when it is absent).

  (epath's own `walk` yields bucket paths without their `gs://`.)
  """
  folder = Path(resolve(folder))
  if not folder.is_dir():
    return
  for entry in sorted(folder.iterdir(), key=lambda p: p.name):
    if entry.is_dir():
      yield from files_under(entry)
    else:
      yield entry


def copy_tree(src: PathLike, dst: PathLike) -> None:
  """Copies the files under `src` into `dst` (created), replacing files of the same name."""
  src_path, dst_path = Path(resolve(src)), Path(resolve(dst))
  for entry in src_path.iterdir():
    target = dst_path / entry.name
    if entry.is_dir():
      copy_tree(entry, target)
    else:
      dst_path.mkdir(parents=True, exist_ok=True)
      entry.copy(target, overwrite=True)


@contextlib.contextmanager
def staged_dir(path: PathLike) -> Iterator[str]:
  """A local folder to write `path`'s files into: `path` itself (created), or a temporary
  folder uploaded into the remote `path` when the block ends without an error."""
  path = resolve(path)
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="polyglot-") as tmp:
    yield tmp
    copy_tree(tmp, path)
