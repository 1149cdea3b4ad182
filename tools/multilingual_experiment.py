"""Does temperature sampling help the tail? Held-out MLM loss of head and tail languages
after training the same model on the same tokens at sampling exponents 1.0 and 0.3 and
with an annealed schedule.

    python tools/multilingual_experiment.py --steps 3000 --seeds 0 1

The corpus is deliberately skewed, made from the verse-aligned New Testament of
`../shared/data/parallel/bible` (37 languages, about 7,900 verses each): the `HEAD`
languages keep every verse; each other language keeps its first 1% to 5% of verses (the
share rising linearly over the languages in name order: 79 to 395 verses), one verse a
line, `<language>.txt` in `WORKDIR/corpus`. Each language's held-out lines are one in
`validation_every` (20) of its lines, as for any text directory.

The arms (`--arms`) train `runs/demo.gin`'s tiny model (H64 L2, batches of 16 x 128) on
that folder for `--steps` steps each, so every arm sees the same number of tokens:

  alpha=1.0   the languages sampled in proportion to their size (no temperature)
  alpha=0.3   XLM-R's and mT5's exponent
  annealed    mmBERT's exponents 0.7, 0.5 and 0.3 in phases starting at 0, 50% and 80%
              of the steps (`MixtureSchedule`), all languages throughout

At the last step each run scores 8 held-out rows per language (`LanguageEvalConfig`;
the same rows and masks in every run), and the tool reports the mean held-out loss of the
head and the tail languages over seeds (with the spread: the largest minus the smallest
seed's), a per-language table (`results.json`) and `results.png`: loss against corpus
size, one point per language and arm (the mean over seeds). Runs whose workdir already
holds the last evaluation are reused.

Vocabulary across the tail: tokens per character (fertility) of each language's held-out
lines for the default vocabulary (8,000 ids, trained on the embedded UDHR at alpha 0.3) and
for two of `--vocab_size` ids trained on the skewed corpus, its text sampled at alpha 0.3
and at 1.0 as `tools/train_vocab.py --text_dir WORKDIR/corpus --alpha A` samples it.
"""
import json
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from polyglot.convert import cli  # noqa: E402  pylint: disable=wrong-import-position
from polyglot.errors import DataError, PolyglotError  # noqa: E402  pylint: disable=wrong-import-position

HEAD = ("est_Latn", "gla_Latn", "hye_Armn", "swh_Latn")
TAIL_SHARES = (0.01, 0.05)  # the first and the last tail language's share of its verses
ARMS = {
    "alpha=1.0": ("text_directory_mixture.alpha=1.0",),
    "alpha=0.3": ("text_directory_mixture.alpha=0.3",),
    "annealed": ("text_directory_mixture.alpha=0.3", "TrainConfig.schedule=@MixtureSchedule()",
                 "MixtureSchedule.alphas=(0.7, 0.5, 0.3)"),
}
ROWS_PER_LANGUAGE = 8
# Head >= 200 kB of text, tail < 100 kB: every full book is over 400 kB, every cut one
# under 80 kB.
GROUPS = ("LanguageEvalConfig.head_min_size=200000", "LanguageEvalConfig.tail_max_size=100000")


def make_corpus(bible_dir: pathlib.Path, out: pathlib.Path) -> dict[str, int]:
  """Writes the skewed corpus (see the module docstring); returns each language's lines."""
  files = sorted(bible_dir.glob("*_*.tsv"))
  if not files:
    raise DataError(f"{bible_dir} holds no <language>.tsv verse files: pass --bible_dir, the "
                    "folder ../shared/data/parallel/bible")
  tail = [f for f in files if f.stem not in HEAD]
  shares = {f.stem: TAIL_SHARES[0] + (TAIL_SHARES[1] - TAIL_SHARES[0]) * i / max(1, len(tail) - 1)
            for i, f in enumerate(tail)}
  out.mkdir(parents=True, exist_ok=True)
  lines = {}
  for f in files:
    verses = [line.split("\t", 1)[1] for line in f.read_text(encoding="utf-8").splitlines()
              if "\t" in line and line.split("\t", 1)[1].strip()]
    if f.stem in shares:
      verses = verses[:max(2, round(shares[f.stem] * len(verses)))]
    (out / f"{f.stem}.txt").write_text("\n".join(verses) + "\n", encoding="utf-8")
    lines[f.stem] = len(verses)
  return lines


def arm_bindings(arm: str, steps: int) -> list[str]:
  extra = list(ARMS[arm])
  if "TrainConfig.schedule=@MixtureSchedule()" in extra:
    mid = max(1, steps // 2)
    extra.append(f"MixtureSchedule.steps=(0, {mid}, {max(mid + 1, steps * 4 // 5)})")
  return extra


def run_arm(arm: str, seed: int, corpus: pathlib.Path, workdir: pathlib.Path, steps: int
            ) -> dict:
  """Trains (or reuses) one run; returns its languages.json."""
  table = workdir / "languages.json"
  if table.exists() and json.loads(table.read_text())["step"] == steps:
    return json.loads(table.read_text())
  bindings = ["TrainConfig.mixture=@text_directory_mixture()",
              f"text_directory_mixture.path='{corpus.resolve()}'",
              f"NUM_STEPS={steps}", f"TrainConfig.seed={seed}", f"TrainConfig.eval_every={steps}",
              f"TrainConfig.log_every={max(1, steps // 10)}",
              f"CheckpointConfig.save_every={steps}",
              f"LanguageEvalConfig.rows_per_language={ROWS_PER_LANGUAGE}", *GROUPS,
              *arm_bindings(arm, steps)]
  argv = [sys.executable, "-m", "polyglot.train", "--gin_file=runs/demo.gin",
          f"--workdir={workdir.resolve()}", *[f"--gin.{b}" for b in bindings]]
  workdir.mkdir(parents=True, exist_ok=True)
  log = workdir.parent / f"{workdir.name}.log"
  with log.open("w") as f:
    code = subprocess.call(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  if code:
    raise PolyglotError(f"the {arm} run (seed {seed}) failed (exit {code}): see {log}")
  return json.loads(table.read_text())


def summarize(tables: dict[str, list[dict]]) -> dict:
  """{arm: {"head"|"tail": {"loss": mean over seeds, "spread": max - min, "seeds": [...]},
  "languages": {name: mean loss over seeds}}}."""
  out = {}
  for arm, runs in tables.items():
    entry = {}
    for group in ("head", "tail"):
      per_seed = [t["groups"][group]["loss"] for t in runs]
      entry[group] = {"loss": statistics.mean(per_seed), "spread": max(per_seed) - min(per_seed),
                      "seeds": per_seed}
    names = runs[0]["languages"]
    entry["languages"] = {n: {"size": names[n]["size"],
                              "loss": statistics.mean(t["languages"][n]["loss"] for t in runs)}
                          for n in names}
    out[arm] = entry
  return out


def markdown(summary: dict, steps: int, seeds: list[int], lines: dict[str, int]) -> str:
  head = [n for n in lines if n in HEAD]
  rows = ["| arm | head loss | spread | tail loss | spread |", "|---|---|---|---|---|"]
  rows += [f"| {arm} | {e['head']['loss']:.3f} | {e['head']['spread']:.3f} | "
           f"{e['tail']['loss']:.3f} | {e['tail']['spread']:.3f} |" for arm, e in summary.items()]
  return "\n".join([
      f"{steps} steps of 16 x 128 tokens per arm, seeds {seeds}; held-out MLM loss, mean over "
      f"the languages of the group ({len(head)} head, {len(lines) - len(head)} tail), then "
      "over seeds; spread: the largest minus the smallest seed's.", "", *rows])


def plot(path: pathlib.Path, summary: dict) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (slow import)
  fig = Figure(figsize=(8, 5), layout="constrained")
  ax = fig.add_subplot()
  for arm, e in summary.items():
    langs = e["languages"].values()
    ax.scatter([x["size"] for x in langs], [x["loss"] for x in langs], s=14, alpha=0.8,
               label=f"{arm}: head {e['head']['loss']:.2f}, tail {e['tail']['loss']:.2f}")
  ax.set_xscale("log")
  ax.set_xlabel("training text (bytes)")
  ax.set_ylabel("held-out MLM loss (mean over seeds)")
  ax.set_title("skewed New Testament corpus: 4 full books, 33 cut to 1-5%", fontsize=10)
  ax.legend(fontsize=8)
  fig.savefig(path, format="png", dpi=110)


def held_out_lines(path: pathlib.Path, validation_every: int = 20) -> list[str]:
  """A text file's held-out block, as text directories hold it out: its first
  ceil(lines / validation_every) lines."""
  lines = path.read_text(encoding="utf-8").splitlines()
  return lines[:-(-len(lines) // validation_every)]


def fertility(corpus: pathlib.Path, out: pathlib.Path, vocab_size: int, sample_size: int
              ) -> dict:
  """Tokens per character of each language's held-out lines, for the default vocabulary and
  for vocabularies of `vocab_size` trained on `sample_size` lines of the skewed corpus
  sampled at alpha 0.3 and 1.0 (`tools/train_vocab.py`'s sampling, made once into `out`): {vocabulary: {language:
  tokens per character}}."""
  import tasks  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from polyglot.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocabs = {"default": vocab_lib.default_vocabulary()}
  for alpha in (0.3, 1.0):
    path = out / f"vocab_alpha{alpha}.model"
    if not path.exists():
      name = tasks.register_text_directory(str(corpus), name=f"skewed_alpha{alpha}",
                                           alpha=alpha).name
      path.write_bytes(vocab_lib.train_from_mixture(
          name, vocab_lib.VocabConfig(vocab_size=vocab_size, sample_size=sample_size)
      ).model_bytes)
    vocabs[f"alpha={alpha}"] = vocab_lib.Vocabulary(path.read_bytes())
  result = {}
  for name, vocab in vocabs.items():
    result[name] = {}
    for f in sorted(corpus.glob("*.txt")):
      text = held_out_lines(f)
      tokens = sum(len(ids) for ids in vocab.encode_many(text))
      result[name][f.stem] = tokens / max(1, sum(len(t) for t in text))
  return result


def fertility_markdown(fert: dict) -> str:
  rows = ["| vocabulary | head tokens/char | tail tokens/char | worst tail language |",
          "|---|---|---|---|"]
  for name, per in fert.items():
    head = [v for n, v in per.items() if n in HEAD]
    tail = {n: v for n, v in per.items() if n not in HEAD}
    worst = max(tail, key=tail.get)
    rows.append(f"| {name} | {statistics.mean(head):.3f} | {statistics.mean(tail.values()):.3f} "
                f"| {worst} {tail[worst]:.3f} |")
  return "\n".join(rows)


def experiment(args) -> str:
  out = pathlib.Path(args.workdir)
  lines = make_corpus(pathlib.Path(args.bible_dir), out / "corpus")
  tables = {}
  for arm in args.arms:
    tables[arm] = [run_arm(arm, seed, out / "corpus", out / "runs" / f"{arm}-seed{seed}",
                           args.steps) for seed in args.seeds]
    print(f"{arm}: done", flush=True)
  summary = summarize(tables)
  fert = fertility(out / "corpus", out, args.vocab_size, args.vocab_sample)
  (out / "results.json").write_text(json.dumps(
      {"steps": args.steps, "seeds": args.seeds, "lines": lines, "arms": summary,
       "fertility": fert}, indent=1))
  plot(out / "results.png", summary)
  return "\n\n".join([markdown(summary, args.steps, args.seeds, lines), fertility_markdown(fert),
                       f"plot: {out / 'results.png'}"])


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="tools/multilingual_experiment.py", description=__doc__)
  p.add_argument("--steps", type=cli.positive_int, default=3000, help="training steps per arm")
  p.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=[0, 1])
  p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
  p.add_argument("--bible_dir", "--bible-dir", default="../shared/data/parallel/bible")
  p.add_argument("--workdir", default="workdir/multilingual_experiment")
  p.add_argument("--vocab_size", "--vocab-size", type=cli.positive_int, default=8000,
                 help="size of the vocabularies trained on the corpus for the fertility table")
  p.add_argument("--vocab_sample", "--vocab-sample", type=cli.positive_int, default=100_000,
                 help="lines sampled to train each of them")
  return p


def main(argv=None) -> int:
  return cli.main(parser(), experiment, argv)


if __name__ == "__main__":
  sys.exit(main())
