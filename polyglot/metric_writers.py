"""Run logs: TensorBoard event files, `metrics.jsonl`, and the console progress line.

Only the primary process (JAX process 0) writes; the others get a writer
that does nothing, so callers never branch on the process index. The workdir
may be a local path or a URL (`polyglot.paths`); tensorboardX writes event
files to `gs://` and `s3://` itself.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping

from polyglot import paths


class MetricWriter:
  """Scalars to TensorBoard and `metrics.jsonl` in the workdir."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      workdir = paths.resolve(workdir)
      paths.Path(workdir).mkdir(parents=True, exist_ok=True)
      self._tb = SummaryWriter(paths.join(workdir, "tensorboard"))
      self._jsonl = paths.TextAppender(paths.join(workdir, "metrics.jsonl"))

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items() if v is not None}
    for name, value in clean.items():
      self._tb.add_scalar(f"{prefix}/{name}", value, step)
    self._jsonl.write(json.dumps({"step": step, "split": prefix, **clean}) + "\n")
    self._jsonl.flush()

  def text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, f"```\n{text}\n```", step)

  def flush(self) -> None:
    """Makes everything written so far durable (a bucket's copy is otherwise refreshed at
    most every `TextAppender.remote_flush_s` seconds)."""
    if self.enabled:
      self._tb.flush()
      self._jsonl.flush(force=True)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


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
