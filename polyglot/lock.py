"""One training run per workdir: the lock `<workdir>/polyglot.lock`.

A second run started on a busy workdir (a job submitted twice, a pod
restarted while the old one still runs) exits at once with a one-line error
naming the holder, instead of interleaving checkpoints and logs with it:

    error: workdir /ckpt/base is in use by pid 4242 on host-a (started
    2026-11-30T11:02:03Z, `python -m polyglot.train ...`): ...

The lock file holds its holder as JSON (host, pid, start time, command).

- Local and network filesystems: an exclusive `flock` on the file, held for
  the run's lifetime. The kernel (or the NFS lock manager) releases it when
  the process dies, however it dies, so a stale lock of a dead process is
  taken over by the next run with no race; the new holder rewrites the file.
- Buckets (`gs://`): an object created with the precondition
  `ifGenerationMatch=0` (exactly one writer succeeds) and deleted on release
  with the generation it was created with. A lock left by a dead process on
  the same host is deleted with its generation as precondition (two runs
  taking it over cannot both succeed); a lock of another host cannot be
  known dead: the error says how to delete it.

In a multi-host job, process 0 takes the lock for the job.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import shlex
import socket
import sys

from polyglot import paths
from polyglot.errors import PolyglotError

log = logging.getLogger(__name__)

NAME = "polyglot.lock"


class WorkdirBusy(PolyglotError):
  """Another run holds the workdir."""


def holder_record() -> dict[str, object]:
  """This process, as the lock records it."""
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
          "command": shlex.join([os.path.basename(sys.executable), *sys.argv])}


def describe(holder: dict | None) -> str:
  if not holder:
    return "another process"
  return (f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')}, "
          f"`{holder.get('command', '?')}`)")


def _parse(data: bytes) -> dict | None:
  try:
    holder = json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, ValueError):
    return None
  return holder if isinstance(holder, dict) else None


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def dead_here(holder: dict | None) -> bool:
  """Whether `holder` is a process of this host that no longer runs."""
  return bool(holder) and holder.get("host") == socket.gethostname() and isinstance(
      holder.get("pid"), int) and not _alive(holder["pid"])


def _unwritable(workdir: str, e: Exception) -> PolyglotError:
  reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
  return PolyglotError(f"cannot write the workdir {workdir} ({reason}): pass a --workdir "
                       "you can write")


class _FileLock:
  """flock on a local (or NFS) file."""

  def __init__(self, workdir: str):
    self.workdir, self.path = workdir, os.path.join(workdir, NAME)
    self.fd: int | None = None

  def acquire(self) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top
    try:
      os.makedirs(self.workdir, exist_ok=True)
      while True:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          holder = _parse(os.pread(fd, 1 << 16, 0))
          os.close(fd)
          raise WorkdirBusy(
              f"workdir {self.workdir} is in use by {describe(holder)}: wait for that run, "
              f"stop it, or pass another --workdir (the lock {self.path} is released when "
              "its process exits)") from None
        # The holder before us may have removed the file between our open and flock.
        if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
          break
        os.close(fd)
      stale = _parse(os.pread(fd, 1 << 16, 0))
      if stale:
        log.warning("took over the lock of %s, which ended without releasing it",
                    describe(stale))
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(holder_record()) + "\n").encode(), 0)
    except OSError as e:
      raise _unwritable(self.workdir, e) from e
    self.fd = fd

  def release(self) -> None:
    if self.fd is None:
      return
    try:
      os.unlink(self.path)  # while still locked: the next run creates a fresh file
    except OSError:
      pass
    os.close(self.fd)
    self.fd = None


class _BucketLock:
  """An object created only if absent (`ifGenerationMatch=0`), on GCS."""

  def __init__(self, workdir: str):
    self.workdir, self.url = workdir, paths.join(workdir, NAME)
    self.blob, self.generation = None, None

  def _blob(self):
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    bucket, _, name = self.url[len("gs://"):].partition("/")
    return storage.Client().bucket(bucket).blob(name)

  def acquire(self) -> None:
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    from google.auth import exceptions as auth  # pylint: disable=g-import-not-at-top
    try:
      blob = self._blob()
    except auth.GoogleAuthError as e:  # no credentials
      raise _unwritable(self.workdir, e) from e
    data = (json.dumps(holder_record()) + "\n").encode()
    for _ in range(3):
      try:
        blob.upload_from_string(data, if_generation_match=0)
        self.blob, self.generation = blob, blob.generation
        return
      except exceptions.PreconditionFailed:
        pass
      except exceptions.GoogleAPIError as e:
        raise _unwritable(self.workdir, e) from e
      try:
        current = self._blob()
        holder = _parse(current.download_as_bytes())
        generation = current.generation
      except exceptions.NotFound:  # released meanwhile: try again
        continue
      if not dead_here(holder):
        raise WorkdirBusy(
            f"workdir {self.workdir} is in use by {describe(holder)}: wait for that run, stop "
            f"it, or pass another --workdir (if no run is alive, delete {self.url})")
      log.warning("taking over the lock of %s, which ended without releasing it",
                  describe(holder))
      try:
        current.delete(if_generation_match=generation)
      except (exceptions.PreconditionFailed, exceptions.NotFound):
        pass  # another run took it over first: the next upload finds out
    raise WorkdirBusy(f"workdir {self.workdir}: the lock {self.url} keeps changing hands; "
                      "make sure only one run uses this workdir")

  def release(self) -> None:
    if self.blob is None:
      return
    from google.api_core import exceptions  # pylint: disable=g-import-not-at-top
    try:
      self.blob.delete(if_generation_match=self.generation)
    except exceptions.GoogleAPIError as e:
      log.warning("could not delete the lock %s (%s): delete it before the next run",
                  self.url, str(e).splitlines()[0])
    self.blob = None


class WorkdirLock:
  """`with WorkdirLock(workdir, primary):` holds `workdir` for the block (primary process)."""

  def __init__(self, workdir: str, primary: bool = True):
    workdir = paths.resolve(workdir)
    self.primary = primary
    if not paths.is_url(workdir):
      self._lock = _FileLock(workdir)
    elif workdir.startswith(("gs://", "gcs://")):
      self._lock = _BucketLock(workdir.replace("gcs://", "gs://", 1))
    else:
      raise PolyglotError(f"workdir {workdir}: polyglot can lock local, network and gs:// "
                          "workdirs only; pass one of those")

  def __enter__(self) -> WorkdirLock:
    if self.primary:
      self._lock.acquire()
    return self

  def __exit__(self, *exc) -> None:
    if self.primary:
      self._lock.release()
