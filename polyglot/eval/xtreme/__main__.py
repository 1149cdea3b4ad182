"""`python -m polyglot.eval.xtreme`: XTREME zero-shot transfer of a polyglot checkpoint.

    python -m polyglot.eval.xtreme --checkpoint_dir=workdir/demo \\
        --data_dir=../shared/data/xtreme --tasks=xnli,udpos,panx,tydiqa,tatoeba \\
        --output_dir=xtreme/demo [--languages=de,zh] [--gin.xnli/TaskHparams.batch_size=16]

Every directory may be relative or a bucket URL (gs://...).

Fine-tunes on English and predicts every language found (retrieval tasks
use the frozen encoder), then writes results.json, results.md and
results.png into --output_dir. Per-task settings come from gin:
gin/eval/xtreme.gin (XTREME's published values), then any --gin_file and
--gin.X=V overrides. A rerun into the same --output_dir reuses finished
tasks. --mesh shards over the devices as gin's MeshConfig says (e.g.
--gin_file=mesh/gpu_8.gin); without it the run uses one device. Errors
print one `error: ...` line: exit 2 for flags and configuration, 1 for data
and checkpoints.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys

from polyglot import _env, paths
from polyglot.errors import ConfigError, PolyglotError

GIN_DIR = pathlib.Path(__file__).resolve().parents[3] / "gin"
DEFAULT_GIN = "eval/xtreme.gin"
ALL_TASKS = "xnli,pawsx,udpos,panx,xquad,mlqa,tydiqa,bucc2018,tatoeba"


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one `error:` line, exit 2 (not argparse's usage block)
    raise ConfigError(f"{message}; see --help")


def parse_flags(argv: list[str]) -> argparse.Namespace:
  p = _Parser(prog="python -m polyglot.eval.xtreme", description=__doc__,
              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint_dir", "--checkpoint-dir", type=paths.resolve, required=True,
                 help="a polyglot.train workdir")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--data_dir", "--data-dir", type=paths.resolve, default=None,
                 help="XTREME or shared-data task folders")
  p.add_argument("--tfds_data_dir", "--tfds-data-dir", type=paths.resolve, default=None,
                 help="prepared TFDS builders instead")
  p.add_argument("--tasks", default=ALL_TASKS, help=f"comma-separated (default {ALL_TASKS})")
  p.add_argument("--output_dir", "--output-dir", type=paths.resolve, required=True,
                 help="report, scores and fine-tuned models")
  p.add_argument("--languages", default=None, help="comma-separated (default: all found)")
  p.add_argument("--gin_file", "--gin-file", action="append", default=[],
                 help=f"gin file (repeatable) in the cwd or {GIN_DIR}, parsed after "
                 f"{DEFAULT_GIN}")
  p.add_argument("--mesh", action="store_true",
                 help="shard over gin's MeshConfig (default: one device)")
  args, rest = p.parse_known_args(argv)
  unknown = [a for a in rest if not (a.startswith("--gin.") and "=" in a)]
  if unknown:
    raise ConfigError(f"unrecognised arguments {unknown}; gin overrides are --gin.NAME=VALUE")
  args.gin_bindings = [a[len("--gin."):] for a in rest]
  # XTREME's settings first; --gin_file adds files (a mesh, smoke-run caps) after them.
  args.gin_file = [DEFAULT_GIN, *(f for f in args.gin_file if f != DEFAULT_GIN)]
  return args


def parse_gin(files: list[str], bindings: list[str]) -> None:
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN_DIR))
  found = []
  for f in files:
    if not (os.path.exists(f) or (GIN_DIR / f).exists()):
      raise ConfigError(f"gin file {f!r} not found in {os.getcwd()} or {GIN_DIR}; check the "
                        f"path (e.g. --gin_file={DEFAULT_GIN})")
    found.append(f if os.path.exists(f) else str(GIN_DIR / f))  # gin logs misses as errors
  try:
    gin.parse_config_files_and_bindings(found, bindings, finalize_config=True,
                                        skip_unknown=False)
  except (ValueError, KeyError, ImportError, IOError, SyntaxError) as e:
    raise ConfigError(f"gin: {str(e).splitlines()[0]}") from e


def make_request(args: argparse.Namespace):
  """Flags and gin -> `run.Request`; every task's settings resolved in its gin scope."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import configurables  # pylint: disable=g-import-not-at-top
  from polyglot.eval.xtreme import run, tasks  # pylint: disable=g-import-not-at-top
  specs = tasks.parse_tasks(args.tasks)
  parse_gin(args.gin_file, args.gin_bindings)
  hparams = {}
  for spec in specs:
    with gin.config_scope(spec.name):
      hparams[spec.name] = (configurables.TaskHparams() if spec.fine_tuned
                            else configurables.RetrievalHparams())
  languages = tuple(x.strip() for x in args.languages.split(",") if x.strip()) if (
      args.languages) else None
  request = run.Request(
      checkpoint_dir=args.checkpoint_dir, output_dir=args.output_dir, tasks=specs,
      hparams=hparams, data_dir=args.data_dir, tfds_data_dir=args.tfds_data_dir,
      step=args.step, languages=languages, config=configurables.XtremeConfig(),
      mesh=configurables.MeshConfig() if args.mesh else None)
  paths.write_text(paths.join(request.output_dir, "config.gin"), gin.operative_config_str())
  return request


def _fail(e: Exception, code: int) -> int:
  print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
  return code


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("polyglot").setLevel(logging.INFO)  # also where an import set up logging
  _env.quiet_libraries()
  from polyglot.eval.xtreme import run  # pylint: disable=g-import-not-at-top
  try:
    request = make_request(parse_flags(sys.argv[1:] if argv is None else argv))
    files = run.evaluate(request)
  except ConfigError as e:
    return _fail(e, 2)
  except PolyglotError as e:
    return _fail(e, 1)
  print(f"done: {files['md']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
