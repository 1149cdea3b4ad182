"""The results of a benchmark run: results.json, results.md, results.png; progress bars.

Input is `scores[task][lang] = {metric: value}` with values in percent, as
`metrics` and `retrieval` return them. Each (task, language) gets one headline
score, XTREME `evaluate.py`'s `avg_metric`: accuracy, F1 (entity F1 of tagging
tasks, BUCC's mining F1), or the mean of exact match and F1 (QA). A task's
score is the mean over its languages, a category's the mean over its tasks,
and the overall score the mean over the categories present or over the tasks
(`benchmarks.Benchmark.average`).
"""
from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from polyglot import paths
from polyglot.errors import DataError
from polyglot.eval import tasks
from polyglot.eval.benchmarks import Benchmark

_DEV_MARK = "†"


def headline(spec: tasks.TaskSpec, metrics: Mapping[str, float]) -> float:
  """The one score averaged for a task from its metrics dict."""
  need = spec.headline or (("exact_match", "f1") if spec.task_type == "qa"
                           else ("f1",) if spec.metric in ("seqeval_f1", "bucc_f1")
                           else ("ndcg",) if spec.metric == "ndcg"
                           else ("map@20",) if spec.metric == "map_at_20" else ("accuracy",))
  if any(k not in metrics for k in need):
    raise DataError(f"{spec.name} scores need {need}, got {sorted(metrics)}")
  return sum(metrics[k] for k in need) / len(need)


def summarize(benchmark: Benchmark, scores: Mapping[str, Mapping[str, Mapping[str, float]]],
              splits: Mapping[str, Mapping[str, str]] | None = None,
              seconds: Mapping[str, float] | None = None) -> dict[str, Any]:
  """Headline scores per (task, language), task and category means, overall mean.

  `splits[task][lang]` names the split scored ("test" or "dev"), when known;
  `seconds[task]` the wall time of the task's evaluation (fine-tuning included).
  """
  out_tasks, by_category = {}, {}
  for task, per_lang in scores.items():
    if not per_lang:
      continue
    spec = benchmark.task(task)
    langs = {}
    for lang, m in sorted(per_lang.items()):
      langs[lang] = {"score": headline(spec, m), **m}
      if splits and lang in splits.get(task, {}):
        langs[lang]["split"] = splits[task][lang]
    average = statistics.fmean(v["score"] for v in langs.values())
    category = benchmark.categories[task]
    out_tasks[task] = {"category": category, "average": average, "languages": langs}
    if seconds and task in seconds:
      out_tasks[task]["seconds"] = seconds[task]
    by_category.setdefault(category, []).append(average)
  categories = {c: statistics.fmean(v) for c, v in by_category.items()}
  means = (categories.values() if benchmark.average == "categories"
           else [t["average"] for t in out_tasks.values()])
  overall = statistics.fmean(means) if means else None
  return {"tasks": out_tasks, "categories": categories, "overall": overall}


def write_json(path: str, summary: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
  paths.write_text(path, json.dumps({"run": dict(metadata), **summary}, indent=2,
                                    ensure_ascii=False) + "\n")


def _fmt(x: float | None) -> str:
  return "" if x is None else f"{x:.1f}"


def markdown(benchmark: Benchmark, summary: Mapping[str, Any], metadata: Mapping[str, Any]
             ) -> str:
  """A language x task table with task averages, then categories and overall."""
  task_names = list(summary["tasks"])
  lines = [f"# {benchmark.title} results", ""]
  lines += [f"- {k}: {v}" for k, v in metadata.items()]
  lines += ["", "| language | " + " | ".join(task_names) + " |",
            "|---|" + "---:|" * len(task_names)]
  langs = sorted({lang for t in summary["tasks"].values() for lang in t["languages"]})
  has_dev = False
  for lang in langs:
    cells = []
    for task in task_names:
      entry = summary["tasks"][task]["languages"].get(lang)
      dev = entry is not None and entry.get("split") == "dev"
      has_dev |= dev
      cells.append(_fmt(entry and entry["score"]) + (_DEV_MARK if dev else ""))
    lines.append(f"| {lang} | " + " | ".join(cells) + " |")
  lines.append("| **average** | " + " | ".join(
      f"**{_fmt(summary['tasks'][t]['average'])}**" for t in task_names) + " |")
  if has_dev:
    lines += ["", f"{_DEV_MARK} scored on the dev set (no labelled test set in the data dir)."]
  lines += ["", "| category | score |", "|---|---:|"]
  lines += [f"| {c} | {_fmt(s)} |" for c, s in summary["categories"].items()]
  lines += [f"| **overall** | **{_fmt(summary['overall'])}** |", ""]
  lines.append(benchmark.score_note)
  times = [f"{t} {e['seconds']:.0f} s" for t, e in summary["tasks"].items() if "seconds" in e]
  if times:
    lines += ["", "Wall time per task (fine-tuning and prediction): " + ", ".join(times) + "."]
  return "\n".join(lines) + "\n"


def plot(path: str, summary: Mapping[str, Any]) -> None:
  """One bar chart of per-language scores per task, the task mean as a line."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (slow import)
  items = list(summary["tasks"].items())
  if not items:
    raise DataError("nothing to plot: no task has scores")
  cols = min(3, len(items))
  rows = math.ceil(len(items) / cols)
  fig = Figure(figsize=(5.5 * cols, 3.6 * rows), layout="constrained")
  for i, (task, entry) in enumerate(items):
    ax = fig.add_subplot(rows, cols, i + 1)
    langs = list(entry["languages"])
    ax.bar(range(len(langs)), [entry["languages"][lg]["score"] for lg in langs], color="#4c72b0")
    ax.axhline(entry["average"], color="#c44e52", linestyle="--", linewidth=1,
               label=f"mean {entry['average']:.1f}")
    ax.set_xticks(range(len(langs)), langs, rotation=90 if len(langs) > 12 else 0,
                  fontsize=7 if len(langs) > 12 else 9)
    ax.set_ylim(0, 100)
    ax.set_title(f"{task} ({entry['category'].lower()})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110)
  paths.write_bytes(path, png.getvalue())


def write_report(output_dir: str, benchmark: Benchmark,
                 scores: Mapping[str, Mapping[str, Mapping[str, float]]],
                 metadata: Mapping[str, Any] | None = None,
                 splits: Mapping[str, Mapping[str, str]] | None = None,
                 seconds: Mapping[str, float] | None = None) -> dict[str, str]:
  """Writes results.json, results.md and results.png into `output_dir` (local or a URL)."""
  out = paths.resolve(output_dir)
  summary = summarize(benchmark, scores, splits, seconds)
  metadata = dict(metadata or {})
  files = {kind: paths.join(out, f"results.{kind}") for kind in ("json", "md", "png")}
  write_json(files["json"], summary, metadata)
  paths.write_text(files["md"], markdown(benchmark, summary, metadata))
  plot(files["png"], summary)
  return files


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "",
             unit: str = "it"):
  """A progress bar with rate and ETA on stderr (tqdm, a tensorflow-datasets dependency)."""
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                   mininterval=1.0)
