"""MLM alone, MLM + TLM, MLM + TLM + XLCo, side by side on the same number of tokens.

    python tools/objectives_experiment.py --tokens 3000000 --seeds 0 1

XLCo runs twice: with InfoXLM's momentum encoder and queue, and with in-batch
negatives (`XLCo.negatives='in_batch'`). Each arm is `python -m polyglot.train --gin_file=runs/infoxlm_cpu.gin` (UDHR in
390 languages for MLM, 8 New Testament languages for TLM and XLCo, a tiny model)
with `RunConfig.objectives` set to the arm's and as many steps as give `--tokens`
training tokens (MLM rows 16 x 128, TLM rows 16 x 128, XLCo pairs 2 x 16 x 64:
2,048 tokens per objective per step). Each finished run is scored by
`python -m polyglot.eval.bitext`: verse retrieval on the held-out book (REV, never
trained on) over the 28 pairs of the 8 languages, with XTREME's mean pooling and
with the `<s>` vector XLCo trains, and Tatoeba retrieval for the two of them
Tatoeba has (est, swh against English, which only the UDHR has);
plus its last held-out MLM loss and its median training tokens/s. A markdown
table goes to stdout (and `--output`, JSON, holds every number). Running it again
with the same `--workdir` reuses finished runs (their command resumes at the last
step) and scores them again.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from polyglot.convert import cli  # noqa: E402  pylint: disable=wrong-import-position
from polyglot.errors import ConfigError, PolyglotError  # noqa: E402  pylint: disable=wrong-import-position

# Arm -> its objectives and gin bindings.
ARMS = {"MLM": ("[@MLM()]",), "MLM + TLM": ("[@MLM(), @TLM()]",),
        "MLM + TLM + XLCo": ("[@MLM(), @TLM(), @XLCo()]",),
        "MLM + TLM + XLCo in-batch": ("[@MLM(), @TLM(), @XLCo()]",
                                      "--gin.XLCo.negatives='in_batch'")}
TOKENS_PER_OBJECTIVE = 16 * 128  # rows x length of each objective's batch in the recipe
BIBLE_LANGUAGES = "swh_Latn,est_Latn,wol_Latn,quc_Latn,cak_Latn,mam_Latn,dik_Latn,rom_Latn"


def steps_for(arm: str, tokens: int) -> int:
  return max(1, round(tokens / (TOKENS_PER_OBJECTIVE * ARMS[arm][0].count("@"))))


def run(argv: list[str], log: pathlib.Path) -> None:
  with log.open("w") as f:
    code = subprocess.call([sys.executable, *argv], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  if code:
    raise PolyglotError(f"{' '.join(argv[:2])} failed (exit {code}): see {log}")


def metrics(workdir: pathlib.Path) -> dict[str, float]:
  """The last held-out MLM loss and the median training tokens/s of a finished run."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if r["split"] == "eval"]
  speeds = [r["tokens_per_s"] for r in rows if r["split"] == "train" and "tokens_per_s" in r]
  return {"eval_mlm_loss": evals[-1]["mlm_loss"], "tokens_per_s": statistics.median(speeds)}


def arm_result(arm: str, seed: int, args) -> dict:
  name = arm.replace(" + ", "_").replace(" ", "_").replace("-", "_").lower()
  workdir = pathlib.Path(args.workdir, f"{name}_seed{seed}").resolve()
  steps = steps_for(arm, args.tokens)
  run(["-m", "polyglot.train", "--gin_file=runs/infoxlm_cpu.gin", f"--workdir={workdir}",
       f"--gin.RunConfig.objectives={ARMS[arm][0]}", *ARMS[arm][1:], f"--gin.NUM_STEPS={steps}",
       f"--gin.TrainConfig.seed={seed}", f"--gin.TrainConfig.eval_every={steps}",
       f"--gin.CheckpointConfig.save_every={steps}"], workdir.with_suffix(".train.log"))
  result = {"arm": arm, "seed": seed, "steps": steps} | metrics(workdir)
  rev = ["--bible", args.bible, "--languages", BIBLE_LANGUAGES, "--books", "REV"]
  for name, source in (("bible_rev", rev), ("bible_rev_cls", [*rev, "--pooling=cls"]),
                       ("tatoeba", ["--tatoeba", args.tatoeba, "--languages", "est,swh"])):
    out = workdir / f"{name}.json"
    run(["-m", "polyglot.eval.bitext", f"--checkpoint_dir={workdir}", *source,
         f"--output={out}"], workdir.with_suffix(f".{name}.log"))
    result[name] = json.loads(out.read_text())["average"]["mean"]
  return result


def table(results: list[dict]) -> str:
  lines = ["| objectives | steps | seed | REV retrieval, mean (%) | REV retrieval, `<s>` (%) "
           "| Tatoeba est, swh (%) | held-out MLM loss | tokens/s |",
           "|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['arm']} | {r['steps']} | {r['seed']} | {r['bible_rev']:.2f} | "
                 f"{r['bible_rev_cls']:.2f} | {r['tatoeba']:.2f} | {r['eval_mlm_loss']:.3f} | "
                 f"{r['tokens_per_s']:,.0f} |")
  return "\n".join(lines)


def experiment(args) -> str:
  """Every arm for every seed (a JSON line each as it ends); returns the table."""
  if args.tokens < TOKENS_PER_OBJECTIVE * 3:
    raise ConfigError(f"--tokens={args.tokens} is below one step of every arm: use >= "
                      f"{TOKENS_PER_OBJECTIVE * 3}")
  pathlib.Path(args.workdir).mkdir(parents=True, exist_ok=True)
  results = []
  for seed in args.seeds:
    for arm in args.arms:
      results.append(arm_result(arm, seed, args))
      print(json.dumps(results[-1]), flush=True)
  if args.output:
    pathlib.Path(args.output).write_text(json.dumps(results, indent=1))
  return table(results)


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="tools/objectives_experiment.py", description=__doc__)
  p.add_argument("--tokens", type=cli.positive_int, default=3_000_000,
                 help="training tokens per arm (all objectives together)")
  p.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=[0])
  p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
  p.add_argument("--workdir", default="workdir/objectives_experiment")
  p.add_argument("--bible", default="../shared/data/parallel/bible")
  p.add_argument("--tatoeba", default="../shared/data/xtreme/tatoeba")
  p.add_argument("--output", default=None, help="a JSON file for every number")
  return p


def main(argv=None) -> int:
  return cli.main(parser(), experiment, argv)


if __name__ == "__main__":
  sys.exit(main())
