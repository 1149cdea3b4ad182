"""Benchmarks: a table of tasks, its settings file, its averaging; registered by name.

`python -m polyglot.eval --benchmark=NAME` evaluates on `get(NAME)`. A
benchmark's module defines `BENCHMARK`; it is imported only when asked for,
so the evaluation core imports no benchmark.

Averaging: a (task, language) has one headline score (`report.headline`), a
task the mean over its languages, a category the mean over its tasks, and the
overall score the mean over the categories present (XTREME's `GROUP2TASK`
averaging) or over the tasks (`average="tasks"`: XTREME-R's, XGLUE's).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polyglot.errors import ConfigError
from polyglot.eval import readers
from polyglot.eval.tasks import TaskSpec

MODULES = {"xtreme": "polyglot.eval.xtreme.tasks",  # --benchmark -> module with BENCHMARK
           "xtreme_r": "polyglot.eval.xtreme_r.tasks",
           "xglue": "polyglot.eval.xglue.tasks"}
AVERAGES = ("categories", "tasks")


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A benchmark: its tasks by name, their settings, how their scores are averaged."""
  name: str  # --benchmark; the key of its record in fine-tuned checkpoints' metadata
  title: str  # the report's heading
  tasks: Mapping[str, TaskSpec]
  gin_file: str  # per-task settings, relative to gin/ (parsed before the user's files)
  categories: Mapping[str, str]  # task name -> category
  score_note: str  # the report's line on what each task's headline score is
  average: str = "categories"  # the overall score: the mean over "categories" or "tasks"
  # (output dir of one split, spec, language, `finetune.predictions`): writes the
  # predictions of a fine-tuned task as the benchmark's scorer reads them.
  write_predictions: Callable[[str, TaskSpec, str, Any], None] | None = None

  def __post_init__(self):
    if self.average not in AVERAGES:
      raise ConfigError(f"benchmark {self.name}: average={self.average!r} is invalid: use "
                        f"one of {AVERAGES}")
    absent = sorted(set(self.tasks) ^ set(self.categories))
    if absent:
      raise ConfigError(f"benchmark {self.name}: tasks {absent} need exactly one category")
    formats = {lay.fmt for spec in self.tasks.values() for lay in spec.layouts}
    unknown = sorted(formats - set(readers.FILE_READERS))
    if unknown:
      raise ConfigError(f"benchmark {self.name}: no reader for file formats {unknown}; "
                        "register them with readers.register_file_format")

  def task(self, name: str) -> TaskSpec:
    if name not in self.tasks:
      raise ConfigError(f"unknown {self.title} task {name!r}; known: {', '.join(self.tasks)}")
    return self.tasks[name]

  def parse_tasks(self, names: str | Sequence[str]) -> tuple[TaskSpec, ...]:
    """Specs for a comma-separated list (the `--tasks` flag) or a sequence of names."""
    if isinstance(names, str):
      names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
      raise ConfigError(f"no task given; known: {', '.join(self.tasks)}")
    return tuple(self.task(n) for n in names)


def get(name: str) -> Benchmark:
  """The benchmark registered as `name`."""
  if name not in MODULES:
    raise ConfigError(f"unknown benchmark {name!r}: use one of {', '.join(MODULES)}")
  return importlib.import_module(MODULES[name]).BENCHMARK
