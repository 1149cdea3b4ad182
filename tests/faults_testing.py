"""Helpers of the fault and bad-input tests (tests/test_faults_*.py).

What a user must see for a bad input: one `error: ...` line naming the input,
a non-zero exit, no traceback, and every file that was there before still
there, unchanged (`snapshot` before, `assert_unchanged` after).
"""
from __future__ import annotations

import hashlib
import pathlib


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(code: int, stderr: str, *needles: str, expect_code: int | None = None
                          ) -> str:
  """The run failed (with `expect_code` when given) with exactly one `error:` line holding
  every needle, and no traceback; returns that line."""
  assert code != 0, f"exit 0 for a bad input:\n{stderr[-3000:]}"
  if expect_code is not None:
    assert code == expect_code, f"exit {code}, not {expect_code}:\n{stderr[-3000:]}"
  assert "Traceback" not in stderr, stderr[-5000:]
  assert "In call to configurable" not in stderr, stderr[-3000:]
  errors = error_lines(stderr)
  assert len(errors) == 1, f"{len(errors)} error lines:\n{stderr[-3000:]}"
  for needle in needles:
    assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
  return errors[0]


def snapshot(root) -> dict[str, str]:
  """Relative path -> sha256 of every file under `root`."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def assert_unchanged(root, before: dict[str, str]) -> None:
  """Every file of `before` is still under `root` with the same bytes (new files allowed)."""
  after = snapshot(root)
  lost = [name for name in before if name not in after]
  changed = [name for name in before if name in after and after[name] != before[name]]
  assert not lost and not changed, f"lost {lost}, changed {changed}"
