"""MLM, MLM + TLM, MLM + TLM + XLCo, and replaced-token detection (MRTD, MRTD + TRTD), side
by side on the same number of training tokens or training FLOPs.

    python tools/objectives_experiment.py --tokens 3000000 --seeds 0 1
    python tools/objectives_experiment.py --flops 9.45e11 --arms MLM MRTD "MRTD + TRTD"

The arms (`--arms`; default the first four, `runs/infoxlm_cpu.gin`):

  MLM                        `[@MLM()]`, runs/infoxlm_cpu.gin
  MLM + TLM                  `[@MLM(), @TLM()]`, runs/infoxlm_cpu.gin
  MLM + TLM + XLCo           `[@MLM(), @TLM(), @XLCo()]`, runs/infoxlm_cpu.gin: InfoXLM's
                             momentum encoder and queue
  MLM + TLM + XLCo in-batch  the same with in-batch negatives (`XLCo.negatives='in_batch'`)
  MRTD                       `[@MRTD()]`, runs/xlme_cpu.gin: ELECTRA's replaced-token
                             detection on the UDHR, a generator 1/3 of the width
  MRTD + TRTD                `[@MRTD(), @TRTD()]`, runs/xlme_cpu.gin: XLM-E, with TRTD on the
                             verse pairs

Both recipes have the same data (the UDHR in 390 languages for the monolingual rows, 8 New
Testament languages for the pairs), the same tiny model (H64 L2) and the same batches: 16 x
128 tokens per objective (XLCo 2 x 16 x 64), 2,048 tokens per objective per step. Each arm is
`python -m polyglot.train --gin_file=<its recipe>` with `RunConfig.objectives` set to the arm's
and NUM_STEPS chosen by the budget, exactly one of `--tokens` and `--flops`. With
`--tokens N` (the same training tokens), steps = round(N / (2,048 x the arm's objectives)).
With `--flops F` (the same training compute), steps = round(F / the arm's training FLOPs per
step), at least 1, FLOPs per step being polyglot's own accounting
(`polyglot.trainer.objective_flops` summed over the objectives `python -m polyglot.train`
builds from the arm's gin file and bindings, for the recipe's model: `flops_per_step`), so
an RTD step counts its generator and detection head, an MLM step its d x v decoder.
`--flops 9.45e11` is 300 steps of the MLM arm (3.15e9 FLOPs per step).

Each finished run is scored on signals that do not need an MLM head, so MLM and RTD arms
compare: `python -m polyglot.eval.bitext`, verse retrieval on the held-out book (REV, never
trained on) over the 28 pairs of the 8 languages, with XTREME's mean pooling and with the
`<s>` vector XLCo trains, and Tatoeba retrieval for the two of them Tatoeba has (est, swh
against English, which only the UDHR has); and UD-POS (skipped with `--no_udpos`),
`python -m polyglot.eval.xtreme --tasks=udpos --languages=de,zh,fi,ru,ar`: fine-tuned on the
English EWT treebank, zero-shot F1 (XTREME's UD-POS score, percent) averaged over the five
languages' test sets. The tool passes every UD-POS setting as a flag (`UDPOS_FLAGS`):
XTREME's (gin/eval/xtreme.gin: 10 epochs of batch 32, 128 pieces, no warm-up, the English
dev set selecting the model every 500 steps, seed 1) but a learning rate of 5e-4, not 2e-5,
which barely moves a tiny model in 770 updates (10 epochs of the 2,412 English training
sentences in ../shared/data/xtreme/udpos: about 2 minutes per arm on 2 cores). Scores
compare arms with one another, not with XTREME's. Also reported: the last held-out MLM loss
(n/a for arms without MLM: RTD arms log `mrtd_*` metrics), the median training tokens/s,
FLOPs per token (FLOPs per step / tokens per step) and the training FLOPs (steps x FLOPs
per step). A markdown table goes to stdout (and `--output`, JSON, holds every number).
Running it again with the same `--workdir` reuses finished runs (their command resumes at
the last step) and scores them again (UD-POS reuses its fine-tuned model).
"""
import argparse
import contextlib
import functools
import json
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from polyglot.convert import cli  # noqa: E402  pylint: disable=wrong-import-position
from polyglot.errors import ConfigError, PolyglotError  # noqa: E402  pylint: disable=wrong-import-position

INFOXLM, XLME = "runs/infoxlm_cpu.gin", "runs/xlme_cpu.gin"
# Arm -> its gin file, its objectives and any other gin bindings.
ARMS = {"MLM": (INFOXLM, "[@MLM()]"), "MLM + TLM": (INFOXLM, "[@MLM(), @TLM()]"),
        "MLM + TLM + XLCo": (INFOXLM, "[@MLM(), @TLM(), @XLCo()]"),
        "MLM + TLM + XLCo in-batch": (INFOXLM, "[@MLM(), @TLM(), @XLCo()]",
                                      "XLCo.negatives='in_batch'"),
        "MRTD": (XLME, "[@MRTD()]"), "MRTD + TRTD": (XLME, "[@MRTD(), @TRTD()]")}
DEFAULT_ARMS = [arm for arm, (gin_file, *_) in ARMS.items() if gin_file == INFOXLM]
TOKENS_PER_OBJECTIVE = 16 * 128  # rows x length of each objective's batch in the recipes
BIBLE_LANGUAGES = "swh_Latn,est_Latn,wol_Latn,quc_Latn,cak_Latn,mam_Latn,dik_Latn,rom_Latn"
UDPOS_LANGUAGES = ("de", "zh", "fi", "ru", "ar")
UDPOS_FLAGS = ("--gin.udpos/TaskHparams.learning_rate=5e-4",  # XTREME's 2e-5 is for base size
               "--gin.udpos/TaskHparams.num_train_epochs=10.0",
               "--gin.udpos/TaskHparams.batch_size=32",
               "--gin.udpos/TaskHparams.max_seq_length=128",
               "--gin.udpos/TaskHparams.warmup_steps=0",
               "--gin.udpos/TaskHparams.eval_every_steps=500",
               "--gin.udpos/TaskHparams.seed=1")


def bindings(arm: str) -> list[str]:
  """The arm's gin bindings (`NAME=VALUE`) on top of its gin file."""
  _, objectives, *other = ARMS[arm]
  return [f"RunConfig.objectives={objectives}", *other]


@functools.cache
def flops_per_step(arm: str) -> tuple[float, int]:
  """(training FLOPs, tokens) of one step of `arm`: `trainer.objective_flops` summed over the
  objectives `python -m polyglot.train` builds from the arm's gin file and bindings, for the
  recipe's model (no training, nothing compiled)."""
  from polyglot import train, trainer  # pylint: disable=g-import-not-at-top  (JAX)
  with contextlib.chdir(REPO):  # the recipes' data paths are relative to the repository
    run_cfg = train.parse_gin([ARMS[arm][0]], bindings(arm))
    cfg = train.model_config(run_cfg, train.vocabulary(run_cfg.train.mixture))
    objs = train.build_objectives(run_cfg, cfg)
  return (sum(trainer.objective_flops(cfg, o) for o in objs),
          sum(o.data.batch_size * o.data.seq_len for o in objs))


def steps_for(arm: str, tokens: int) -> int:
  return max(1, round(tokens / (TOKENS_PER_OBJECTIVE * ARMS[arm][1].count("@"))))


def steps_for_flops(arm: str, flops: float) -> int:
  return max(1, round(flops / flops_per_step(arm)[0]))


def budget_steps(arm: str, args) -> int:
  return steps_for(arm, args.tokens) if args.tokens else steps_for_flops(arm, args.flops)


def run(argv: list[str], log: pathlib.Path) -> None:
  with log.open("w") as f:
    code = subprocess.call([sys.executable, *argv], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
  if code:
    raise PolyglotError(f"{' '.join(argv[:2])} failed (exit {code}): see {log}")


def metrics(workdir: pathlib.Path) -> dict[str, float | None]:
  """The last held-out MLM loss (None without one: RTD arms) and the median training
  tokens/s (None when no window was timed) of a finished run."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["mlm_loss"] for r in rows if r["split"] == "eval" and "mlm_loss" in r]
  speeds = [r["tokens_per_s"] for r in rows if r["split"] == "train" and "tokens_per_s" in r]
  return {"eval_mlm_loss": losses[-1] if losses else None,
          "tokens_per_s": statistics.median(speeds) if speeds else None}


def udpos(workdir: pathlib.Path, xtreme_dir: str) -> float:
  """UD-POS F1 (%), fine-tuned on English, averaged over UDPOS_LANGUAGES."""
  out = workdir / "xtreme"
  run(["-m", "polyglot.eval.xtreme", f"--checkpoint_dir={workdir}", f"--data_dir={xtreme_dir}",
       "--tasks=udpos", f"--languages={','.join(UDPOS_LANGUAGES)}", f"--output_dir={out}",
       *UDPOS_FLAGS], workdir.with_suffix(".udpos.log"))
  scores = json.loads((out / "results.json").read_text())["tasks"].get("udpos", {})
  missing = [lang for lang in UDPOS_LANGUAGES if lang not in scores.get("languages", {})]
  if missing:
    raise PolyglotError(f"{out}/results.json has no UD-POS score for {','.join(missing)}: "
                        f"check --xtreme={xtreme_dir} holds their udpos test sets")
  return statistics.fmean(scores["languages"][lang]["score"] for lang in UDPOS_LANGUAGES)


def arm_result(arm: str, seed: int, args) -> dict:
  name = arm.replace(" + ", "_").replace(" ", "_").replace("-", "_").lower()
  workdir = pathlib.Path(args.workdir, f"{name}_seed{seed}").resolve()
  steps = budget_steps(arm, args)
  flops, tokens = flops_per_step(arm)
  run(["-m", "polyglot.train", f"--gin_file={ARMS[arm][0]}", f"--workdir={workdir}",
       *(f"--gin.{b}" for b in bindings(arm)), f"--gin.NUM_STEPS={steps}",
       f"--gin.TrainConfig.seed={seed}", f"--gin.TrainConfig.eval_every={steps}",
       f"--gin.CheckpointConfig.save_every={steps}"], workdir.with_suffix(".train.log"))
  result = {"arm": arm, "gin_file": ARMS[arm][0], "seed": seed, "steps": steps,
            "tokens_per_step": tokens, "flops_per_step": flops, "flops_per_token": flops / tokens,
            "train_flops": steps * flops} | metrics(workdir)
  rev = ["--bible", args.bible, "--languages", BIBLE_LANGUAGES, "--books", "REV"]
  for name, source in (("bible_rev", rev), ("bible_rev_cls", [*rev, "--pooling=cls"]),
                       ("tatoeba", ["--tatoeba", args.tatoeba, "--languages", "est,swh"])):
    out = workdir / f"{name}.json"
    run(["-m", "polyglot.eval.bitext", f"--checkpoint_dir={workdir}", *source,
         f"--output={out}"], workdir.with_suffix(f".{name}.log"))
    result[name] = json.loads(out.read_text())["average"]["mean"]
  result["udpos"] = None if args.no_udpos else udpos(workdir, args.xtreme)
  return result


def cell(value: float | None, spec: str) -> str:
  return "n/a" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
  lines = ["| objectives | recipe | steps | seed | FLOPs/token | training FLOPs "
           "| REV retrieval, mean (%) | REV retrieval, `<s>` (%) | Tatoeba est, swh (%) "
           f"| UD-POS F1, {' '.join(UDPOS_LANGUAGES)} (%) | held-out MLM loss | tokens/s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['arm']} | {pathlib.Path(r['gin_file']).stem} | {r['steps']} | "
                 f"{r['seed']} | {r['flops_per_token']:,.0f} | {r['train_flops']:.3g} | "
                 f"{r['bible_rev']:.2f} | {r['bible_rev_cls']:.2f} | {r['tatoeba']:.2f} | "
                 f"{cell(r['udpos'], '.2f')} | {cell(r['eval_mlm_loss'], '.3f')} | "
                 f"{cell(r['tokens_per_s'], ',.0f')} |")
  return "\n".join(lines)


def check_budget(args) -> None:
  if (args.tokens is None) == (args.flops is None):
    raise ConfigError(f"pass exactly one of --tokens and --flops (got "
                      f"{'both' if args.tokens else 'neither'}): e.g. --tokens 3000000 for the "
                      "same training tokens per arm, or --flops 9.45e11 for the same FLOPs")
  if args.tokens is not None and args.tokens < TOKENS_PER_OBJECTIVE * 3:
    raise ConfigError(f"--tokens={args.tokens} is below one step of every arm: use >= "
                      f"{TOKENS_PER_OBJECTIVE * 3}")


def experiment(args) -> str:
  """Every arm for every seed (a JSON line each as it ends); returns the table."""
  check_budget(args)
  pathlib.Path(args.workdir).mkdir(parents=True, exist_ok=True)
  results = []
  for seed in args.seeds:
    for arm in args.arms:
      results.append(arm_result(arm, seed, args))
      print(json.dumps(results[-1]), flush=True)
  if args.output:
    pathlib.Path(args.output).write_text(json.dumps(results, indent=1))
  return table(results)


def positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
  if not value > 0:
    raise argparse.ArgumentTypeError(f"{value} is invalid: use a number > 0")
  return value


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="tools/objectives_experiment.py", description=__doc__)
  p.add_argument("--tokens", type=cli.positive_int, default=None,
                 help="training tokens per arm (all objectives together), e.g. 3000000")
  p.add_argument("--flops", type=positive_float, default=None,
                 help="training FLOPs per arm (polyglot's accounting), e.g. 9.45e11")
  p.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=[0])
  p.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
  p.add_argument("--workdir", default="workdir/objectives_experiment")
  p.add_argument("--bible", default="../shared/data/parallel/bible")
  p.add_argument("--tatoeba", default="../shared/data/xtreme/tatoeba")
  p.add_argument("--xtreme", default="../shared/data/xtreme",
                 help="XTREME data (its udpos/ folder) for the UD-POS score")
  p.add_argument("--no_udpos", "--no-udpos", action="store_true",
                 help="skip the UD-POS fine-tuning (quick runs)")
  p.add_argument("--output", default=None, help="a JSON file for every number")
  return p


def main(argv=None) -> int:
  return cli.main(parser(), experiment, argv)


if __name__ == "__main__":
  sys.exit(main())
