"""`python -m polyglot.eval`: zero-shot cross-lingual transfer of a polyglot checkpoint.

    python -m polyglot.eval --benchmark=xtreme --checkpoint_dir=workdir/demo \\
        --data_dir=../shared/data/xtreme --tasks=xnli,udpos,panx,tydiqa,tatoeba \\
        --output_dir=xtreme/demo [--languages=de,zh] [--gin.xnli/TaskHparams.batch_size=16]

`python -m polyglot.eval.xtreme ...` is `--benchmark=xtreme`. Every directory
may be relative or a bucket URL (gs://...). `--benchmark=bitext` is bitext
retrieval on an aligned corpus, with the flags of `python -m
polyglot.eval.bitext` (--bible, --tatoeba or --files=A,B; see its --help).

Fine-tunes on English and predicts every language found (retrieval tasks
use the frozen encoder), then writes results.json, results.md and
results.png into --output_dir. Per-task settings come from gin: the
benchmark's file (gin/eval/xtreme.gin: XTREME's published values), then any
--gin_file and --gin.X=V overrides. Sequence lengths and the retrieval layer that no
--gin_file or --gin.X sets are fitted to the checkpoint, each change a
warning (polyglot/eval/hparams.py); every setting that does not fit
is named in one error, and nothing is written before the checkpoint and the
settings are checked. --mesh shards over the devices as gin's MeshConfig
says (e.g. --gin_file=mesh/gpu_8.gin); without it the run uses one device.

A rerun into the same --output_dir reuses a task's scores and fine-tuned
model when they were made from the same checkpoint content (the sha256 of
its parameter and vocabulary files, and its model config), the same data
file content, settings and caps; anything else is redone with a warning
saying what changed, and a stale fine-tuned model is moved aside, not
deleted (polyglot/eval/run.py). Errors print one `error: ...` line:
exit 2 for flags and configuration, 1 for data and checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
import sys

from polyglot import _env, paths
from polyglot.errors import ConfigError, PolyglotError

GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin"
BITEXT = "bitext"  # no task table: `polyglot.eval.bitext`, which takes its own flags


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one `error:` line, exit 2 (not argparse's usage block)
    raise ConfigError(f"{message}; see --help")


def parse_flags(argv: list[str], prog: str = "python -m polyglot.eval") -> argparse.Namespace:
  """Flags; `args.benchmark` is the `benchmarks.Benchmark`, `args.tasks` its `TaskSpec`s,
  `args.gin_file` starts with its settings file."""
  from polyglot.eval import benchmarks  # pylint: disable=g-import-not-at-top
  p = _Parser(prog=prog, description=__doc__,
              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--benchmark", required=True, choices=[*benchmarks.MODULES, BITEXT],
                 help="the task table, its settings and its averaging")
  p.add_argument("--checkpoint_dir", "--checkpoint-dir", type=paths.resolve, required=True,
                 help="a polyglot.train workdir")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--data_dir", "--data-dir", type=paths.resolve, default=None,
                 help="the benchmark's task folders")
  p.add_argument("--tfds_data_dir", "--tfds-data-dir", type=paths.resolve, default=None,
                 help="prepared TFDS builders instead")
  p.add_argument("--tasks", default=None, help="comma-separated (default: the benchmark's)")
  p.add_argument("--output_dir", "--output-dir", type=paths.resolve, required=True,
                 help="report, scores and fine-tuned models")
  p.add_argument("--languages", default=None, help="comma-separated (default: all found)")
  p.add_argument("--gin_file", "--gin-file", action="append", default=[],
                 help=f"gin file (repeatable) in the cwd or {GIN_DIR}, parsed after the "
                 "benchmark's")
  p.add_argument("--mesh", action="store_true",
                 help="shard over gin's MeshConfig (default: one device)")
  args, rest = p.parse_known_args(argv)
  unknown = [a for a in rest if not (a.startswith("--gin.") and "=" in a)]
  if unknown:
    raise ConfigError(f"unrecognised arguments {unknown}; gin overrides are --gin.NAME=VALUE")
  args.gin_bindings = [a[len("--gin."):] for a in rest]
  args.benchmark = benchmarks.get(args.benchmark)
  args.tasks = args.benchmark.parse_tasks(args.tasks or list(args.benchmark.tasks))
  # The benchmark's settings first; --gin_file adds files (a mesh, smoke-run caps) after them.
  default = args.benchmark.gin_file
  args.gin_file = [default, *(f for f in args.gin_file if f != default)]
  return args


def parse_gin(files: list[str], bindings: list[str]) -> None:
  """Parses `files`, then `bindings`, into a fresh gin config (what polyglot registers)."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import configurables  # noqa: F401  pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN_DIR))
  found = []
  for f in files:
    if not (os.path.exists(f) or (GIN_DIR / f).exists()):
      raise ConfigError(f"gin file {f!r} not found in {os.getcwd()} or {GIN_DIR}; check the "
                        "path (e.g. --gin_file=mesh/gpu_8.gin)")
    found.append(f if os.path.exists(f) else str(GIN_DIR / f))  # gin logs misses as errors
  try:
    gin.parse_config_files_and_bindings(found, bindings, finalize_config=True,
                                        skip_unknown=False)
  except (ValueError, KeyError, ImportError, IOError, SyntaxError) as e:
    raise ConfigError(f"gin: {str(e).splitlines()[0]}") from e


def _bound(key: str) -> bool:
  """Whether the gin config parsed last binds `key` (`scope/Configurable.param`)."""
  import gin  # pylint: disable=g-import-not-at-top
  try:
    gin.query_parameter(key)
  except ValueError:
    return False
  return True


def _bound_fields(specs, classes) -> dict[str, set[tuple[str, str]]]:
  """Per task, the (scope, field) pairs of its settings class that the config parsed last
  binds; scope "" is an unscoped binding."""
  out = {}
  for spec in specs:
    cls = classes[spec.name].__name__
    out[spec.name] = {(scope, f.name) for f in dataclasses.fields(classes[spec.name])
                      for scope in ("", spec.name)
                      if _bound(f"{scope}/{cls}.{f.name}" if scope else f"{cls}.{f.name}")}
  return out


def user_settings(args: argparse.Namespace, specs) -> dict[str, frozenset[str]]:
  """Per task, the settings fields the user binds (--gin_file, --gin.X) as gin resolves
  them: in the task's scope, or unscoped where the benchmark's file binds no scoped value.
  Parses the user's files alone, then the defaults alone."""
  from polyglot.eval import hparams  # pylint: disable=g-import-not-at-top
  classes = {s.name: hparams.TaskHparams if s.fine_tuned else hparams.RetrievalHparams
             for s in specs}
  default_file = args.benchmark.gin_file
  parse_gin([f for f in args.gin_file if f != default_file], args.gin_bindings)
  user = _bound_fields(specs, classes)
  parse_gin([default_file], [])
  default = _bound_fields(specs, classes)
  return {name: frozenset(f for scope, f in pairs if scope or (name, f) not in default[name])
          for name, pairs in user.items()}


def _settings(specs) -> tuple[dict, list[str]]:
  """Every task's settings, resolved in its gin scope, and the errors of all invalid ones."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import configurables  # pylint: disable=g-import-not-at-top
  found, errors = {}, []
  for spec in specs:
    with gin.config_scope(spec.name):
      try:
        found[spec.name] = (configurables.TaskHparams() if spec.fine_tuned
                            else configurables.RetrievalHparams())
      except ConfigError as e:
        errors.append(f"{spec.name}/{str(e).splitlines()[0]}")
  return found, errors


def make_request(args: argparse.Namespace):
  """Flags and gin -> `run.Request`; every task's settings resolved in its gin scope, every
  invalid value named in one ConfigError. Writes nothing."""
  from polyglot import configurables  # pylint: disable=g-import-not-at-top
  from polyglot.eval import run  # pylint: disable=g-import-not-at-top
  specs = args.tasks
  user_set = user_settings(args, specs)
  parse_gin(args.gin_file, args.gin_bindings)
  hparams, errors = _settings(specs)
  try:
    config = configurables.EvalConfig()
  except ConfigError as e:
    errors.append(str(e).splitlines()[0])
  if errors:
    raise ConfigError("; ".join(errors))
  configurables.check_macros(args.gin_bindings)
  languages = tuple(x.strip() for x in args.languages.split(",") if x.strip()) if (
      args.languages) else None
  return run.Request(
      checkpoint_dir=args.checkpoint_dir, output_dir=args.output_dir,
      benchmark=args.benchmark, tasks=specs,
      hparams=hparams, data_dir=args.data_dir, tfds_data_dir=args.tfds_data_dir,
      step=args.step, languages=languages, config=config,
      mesh=configurables.MeshConfig() if args.mesh else None, user_set=user_set)


def write_config(output_dir: str, fitted: list[str]) -> None:
  """config.gin: gin's operative config, then the settings fitted to the checkpoint."""
  import gin  # pylint: disable=g-import-not-at-top
  text = gin.operative_config_str()
  if fitted:
    text += ("\n# Fitted to the checkpoint (polyglot/eval/hparams.py), replacing the "
             "values above:\n" + "".join(f"{line}\n" for line in fitted))
  paths.write_text(paths.join(output_dir, "config.gin"), text)


def _fail(e: Exception, code: int) -> int:
  print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
  return code


def bitext_flags(argv: list[str]) -> list[str] | None:
  """`argv` without its `--benchmark=bitext` when it asks for bitext retrieval, else None."""
  pre = argparse.ArgumentParser(add_help=False)  # the same spellings as the full parser
  pre.add_argument("--benchmark")
  known, rest = pre.parse_known_args(argv)
  return rest if known.benchmark == BITEXT else None


def main(argv: list[str] | None = None, prog: str = "python -m polyglot.eval") -> int:
  argv = sys.argv[1:] if argv is None else argv
  if (rest := bitext_flags(argv)) is not None:
    from polyglot.eval import bitext  # pylint: disable=g-import-not-at-top
    return bitext.main(rest, prog=f"{prog} --benchmark={BITEXT}")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("polyglot").setLevel(logging.INFO)  # also where an import set up logging
  _env.quiet_libraries()
  from polyglot.eval import run  # pylint: disable=g-import-not-at-top
  try:
    request = make_request(parse_flags(argv, prog))
    # The checkpoint, then every task's data and settings, are checked before anything is
    # written; config.gin comes with the report, so a failed run leaves both as they were.
    evaluation = run.Run(request)
    jobs = evaluation.prepare()
    files = evaluation.execute(jobs)
    write_config(request.output_dir, run.fitted_bindings(request, jobs))
  except ConfigError as e:
    return _fail(e, 2)
  except PolyglotError as e:
    return _fail(e, 1)
  print(f"done: {files['md']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
