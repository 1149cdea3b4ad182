"""Run logs: TensorBoard event files, `metrics.jsonl`, and the console progress line.

Only the primary process (JAX process 0) writes; the others get a writer
that does nothing, so callers never branch on the process index. The workdir
may be a local path or a URL (`polyglot.paths`); tensorboardX writes event
files to `gs://` and `s3://` itself.

`metrics.jsonl` holds each step once and no step after the last checkpoint:
a run that starts at `resume_step` first drops the rows of later steps (those
a killed or failed run logged but never saved, which the resumed run logs
again), and a torn last line.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping

from polyglot import _env, paths
from polyglot.errors import PolyglotError


def rows_through(text: str, step: int) -> str:
  """The JSON lines of `text` whose step is at most `step` (unparseable lines dropped)."""
  kept = []
  for line in text.splitlines(keepends=True):
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
      kept.append(line if line.endswith("\n") else line + "\n")
  return "".join(kept)


def unwritable(path: str, e: OSError) -> PolyglotError:
  return PolyglotError(f"cannot write {path} ({e.strerror or e}): free space or fix the "
                       "permissions, then run the same command to resume from the last "
                       "checkpoint")


def summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch. tensorboardX imports torch
  whenever it is installed, only to accept torch tensors as values; polyglot logs floats,
  and the import costs 1.5 s of every run's start-up (measured with -X importtime)."""
  with _env.without_modules("torch"):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  return SummaryWriter


class MetricWriter:
  """Scalars to TensorBoard and `metrics.jsonl` in the workdir."""

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      SummaryWriter = summary_writer_class()  # pylint: disable=invalid-name
      workdir = paths.resolve(workdir)
      self.path = paths.join(workdir, "metrics.jsonl")
      try:
        paths.Path(workdir).mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
          self._truncate(resume_step)
        self._tb = SummaryWriter(paths.join(workdir, "tensorboard"))
        self._jsonl = paths.TextAppender(self.path)
      except OSError as e:
        raise unwritable(self.path, e) from e

  def _truncate(self, step: int) -> None:
    p = paths.Path(self.path)
    if p.exists():
      text = p.read_bytes().decode("utf-8", errors="replace")
      kept = rows_through(text, step)
      if kept != text:
        paths.write_text(self.path, kept)

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items() if v is not None}
    try:
      for name, value in clean.items():
        self._tb.add_scalar(f"{prefix}/{name}", value, step)
      self._jsonl.write(json.dumps({"step": step, "split": prefix, **clean}) + "\n")
      self._jsonl.flush()
    except OSError as e:
      raise unwritable(self.path, e) from e

  def text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, f"```\n{text}\n```", step)

  def flush(self) -> None:
    """Makes everything written so far durable (a bucket's copy is otherwise refreshed at
    most every `TextAppender.remote_flush_s` seconds)."""
    if self.enabled:
      try:
        self._tb.flush()
        self._jsonl.flush(force=True)
      except OSError as e:
        raise unwritable(self.path, e) from e

  def close(self) -> None:
    """Closes the files; a failure to write their last lines is logged (the run is
    ending, often because of that very failure), not raised."""
    if self.enabled:
      try:
        self._tb.close()
        self._jsonl.close()
      except OSError as e:
        logging.getLogger(__name__).warning("%s", unwritable(self.path, e))


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
  """The console line: step/total, loss, tokens/s, MFU, ETA."""

  def __init__(self, total_steps: int, *, enabled: bool = True, stream=sys.stdout):
    self.total = total_steps
    self.enabled = enabled
    self.stream = stream
    self._t0: float | None = None
    self._s0 = 0

  def start(self, step: int) -> None:
    self._t0, self._s0 = time.perf_counter(), step

  def line(self, step: int, loss: float, tokens_per_s: float | None, mfu: float | None) -> str:
    done = step - self._s0
    elapsed = time.perf_counter() - (self._t0 or time.perf_counter())
    eta = elapsed / done * (self.total - step) if done > 0 else float("inf")
    mfu_text = "n/a" if mfu is None else f"{100 * mfu:.1f}%"
    speed = "-" if tokens_per_s is None else f"{tokens_per_s:,.0f}"
    width = len(str(self.total))
    return (f"step {step:>{width}}/{self.total}  loss {loss:.4f}  "
            f"{speed} tok/s  MFU {mfu_text}  ETA {format_duration(eta)}")

  def print(self, *args, **kwargs) -> None:
    if self.enabled:
      print(self.line(*args, **kwargs), file=self.stream, flush=True)
