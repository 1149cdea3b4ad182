"""Per-language held-out MLM metrics of a pretraining run: the table, its averages, the plot.

At each held-out evaluation (`TrainConfig.eval_every`) the trainer scores
`LanguageEvalConfig.rows_per_language` held-out rows of every language of the
MLM mixture, per data shard (`polyglot.data.heldout`), and reports:
- per language: MLM loss and accuracy over its predicted tokens;
- per script (ISO 15924, from the language id) and per size group: the mean
  over the group's languages, each language counted once. Groups split the
  languages by the size the mixture weighs them by (bytes of text for text
  corpora): head >= `head_min_size`, tail < `tail_max_size`, torso between.

They are written as the `eval_languages` rows of metrics.jsonl and TensorBoard
(`<language>/loss`, `script/<script>/loss`, `group/<group>/loss`, likewise
`accuracy`), the latest table as `languages.json` in the workdir, and at the
end of a run `languages.png`: loss against size, one point per language,
coloured by script. `python -m polyglot.eval.languages WORKDIR` prints the
table's summary and draws the plot again.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polyglot import paths
from polyglot.errors import ConfigError, DataError, PolyglotError

TABLE_FILE = "languages.json"
PLOT_FILE = "languages.png"
GROUPS = ("head", "torso", "tail")


@dataclasses.dataclass(frozen=True)
class LanguageEvalConfig:
  """Per-language held-out evaluation during pretraining (MLM on text corpora and
  tokenized caches)."""
  rows_per_language: int = 2      # held-out rows per language and data shard; 0 disables
  head_min_size: float = 1e9      # head: size >= this (bytes for text corpora; ~XLM-R's
  tail_max_size: float = 1e8      # high-resource languages of CC-100); tail: size < this

  def __post_init__(self):
    c = "LanguageEvalConfig"
    if self.rows_per_language < 0:
      raise ConfigError(f"{c}.rows_per_language={self.rows_per_language} is invalid: use >= 0 "
                        "(0 disables the per-language evaluation)")
    if not 0 <= self.tail_max_size <= self.head_min_size:
      raise ConfigError(f"{c}.tail_max_size={self.tail_max_size:g} is invalid: use a size in "
                        f"[0, head_min_size={self.head_min_size:g}]")


def group_of(size: float, cfg: LanguageEvalConfig) -> str:
  return ("head" if size >= cfg.head_min_size else
          "tail" if size < cfg.tail_max_size else "torso")


def script_of(language: str) -> str:
  """The script of a language id (`swh_Latn` -> `Latn`; resolved as the corpora's ids are);
  "?" for a key that is no language id."""
  from polyglot.data import languages  # pylint: disable=g-import-not-at-top
  try:
    return languages.resolve(language).script
  except DataError:
    return "?"


def _means(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  return {"loss": float(np.mean([e["loss"] for e in entries])),
          "accuracy": float(np.mean([e["accuracy"] for e in entries])),
          "languages": len(entries)}


def table(names: Sequence[str], sizes: Sequence[float], sums: Mapping[str, np.ndarray],
          cfg: LanguageEvalConfig) -> dict[str, Any]:
  """Languages `names` with mixture `sizes` and the evaluation's `sums` ("loss",
  "correct", "tokens" [languages], `mlm.language_sums`) -> {"languages": {name: {size,
  script, group, loss, accuracy, tokens}}, "scripts": {script: means}, "groups": {group:
  means}, "thresholds"}. A language without a predicted token is left out."""
  langs = {}
  for j, name in enumerate(names):
    tokens = float(sums["tokens"][j])
    if tokens > 0:
      langs[name] = {"size": float(sizes[j]), "script": script_of(name),
                     "group": group_of(sizes[j], cfg), "loss": float(sums["loss"][j]) / tokens,
                     "accuracy": float(sums["correct"][j]) / tokens, "tokens": int(tokens)}
  by = lambda key: {k: _means([e for e in langs.values() if e[key] == k])  # noqa: E731
                    for k in sorted({e[key] for e in langs.values()})}
  groups = by("group")
  return {"languages": langs, "scripts": by("script"),
          "groups": {g: groups[g] for g in GROUPS if g in groups},
          "thresholds": {"head_min_size": cfg.head_min_size, "tail_max_size": cfg.tail_max_size}}


def scalars(tab: Mapping[str, Any]) -> dict[str, float]:
  """The table as metric rows: `<language>/loss`, `script/<s>/loss`, `group/<g>/loss`, and
  the same with `accuracy`."""
  out = {}
  for prefix, entries in (("", tab["languages"]), ("script/", tab["scripts"]),
                          ("group/", tab["groups"])):
    for name, e in entries.items():
      out[f"{prefix}{name}/loss"], out[f"{prefix}{name}/accuracy"] = e["loss"], e["accuracy"]
  return out


def summary(tab: Mapping[str, Any], worst: int = 5) -> str:
  """A few console lines: the groups, the scripts, the languages with the highest loss."""
  fmt = lambda e: f"loss {e['loss']:.3f} acc {e['accuracy']:.3f} ({e['languages']} langs)"  # noqa: E731
  lines = [f"held-out MLM by language ({len(tab['languages'])} languages)"]
  lines += [f"  {g:8s} {fmt(e)}" for g, e in tab["groups"].items()]
  top = sorted(tab["scripts"].items(), key=lambda kv: -kv[1]["languages"])[:6]
  lines += ["  scripts: " + ", ".join(f"{s} {e['loss']:.3f}" for s, e in top)]
  high = sorted(tab["languages"].items(), key=lambda kv: -kv[1]["loss"])[:worst]
  lines += ["  highest loss: " + ", ".join(f"{n} {e['loss']:.3f}" for n, e in high)]
  return "\n".join(lines)


def write_table(workdir: str, step: int, tab: Mapping[str, Any]) -> None:
  paths.write_text(paths.join(workdir, TABLE_FILE),
                   json.dumps({"step": step, **tab}, indent=1, ensure_ascii=False) + "\n")


def read_table(workdir: str) -> dict[str, Any]:
  path = paths.join(paths.resolve(workdir), TABLE_FILE)
  try:
    tab = json.loads(paths.Path(path).read_text())
  except FileNotFoundError:
    raise DataError(f"{path} does not exist: run training with a held-out evaluation "
                    "(TrainConfig.eval_every > 0, LanguageEvalConfig.rows_per_language > 0) "
                    "on a text corpus or tokenized cache first") from None
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read {path} ({e}): evaluate again to rewrite it") from None
  if not isinstance(tab, dict) or not tab.get("languages"):
    raise DataError(f"{path} holds no language: evaluate again to rewrite it")
  return tab


def plot(path: str, tab: Mapping[str, Any], top_scripts: int = 9) -> None:
  """Held-out loss against size (log scale), one point per language, coloured by script
  (the `top_scripts` with most languages; the rest grey), group thresholds dashed."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (slow import)
  langs = tab["languages"]
  counts = sorted(tab["scripts"].items(), key=lambda kv: -kv[1]["languages"])
  shown = [s for s, _ in counts[:top_scripts]]
  fig = Figure(figsize=(8, 5), layout="constrained")
  ax = fig.add_subplot()
  for script in shown + ["other"]:
    pts = [e for e in langs.values()
           if (e["script"] == script if script != "other" else e["script"] not in shown)]
    if pts:
      ax.scatter([max(e["size"], 1) for e in pts], [e["loss"] for e in pts], s=12,
                 color=None if script != "other" else "#aaaaaa", alpha=0.8,
                 label=f"{script} ({len(pts)})")
  for size in tab.get("thresholds", {}).values():
    ax.axvline(max(size, 1), color="#555555", linestyle="--", linewidth=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("corpus size (as the mixture weighs languages)")
  ax.set_ylabel("held-out MLM loss")
  means = ", ".join(f"{g} {e['loss']:.2f}" for g, e in tab["groups"].items())
  ax.set_title(f"step {tab.get('step', '?')}: {len(langs)} languages; {means}", fontsize=10)
  ax.legend(fontsize=7, loc="best", ncol=2)
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110)
  paths.write_bytes(path, png.getvalue())


def parser() -> argparse.ArgumentParser:
  from polyglot.convert import cli  # pylint: disable=g-import-not-at-top
  p = cli.ArgumentParser(prog="python -m polyglot.eval.languages",
                         description="Per-language held-out MLM metrics of a run: prints the "
                         f"summary of WORKDIR/{TABLE_FILE} and draws its plot.")
  p.add_argument("workdir", help="the training run's workdir (local path or URL)")
  p.add_argument("--output", default=None,
                 help=f"where to draw the plot (default: WORKDIR/{PLOT_FILE})")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = parser().parse_args(argv)
  try:
    tab = read_table(args.workdir)
    output = args.output or paths.join(paths.resolve(args.workdir), PLOT_FILE)
    print(summary(tab))
    plot(output, tab)
  except PolyglotError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except OSError as e:
    print(f"error: cannot write the plot ({e.strerror or e}): choose another --output",
          file=sys.stderr)
    return 1
  print(f"plot: {output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
