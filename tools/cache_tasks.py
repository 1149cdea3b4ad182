"""Tokenizes a mixture once, with Apache Beam, into a cache that training reads.

  python tools/cache_tasks.py --gin_file=runs/demo.gin --gin_file=data/text_directory.gin \
      --gin.TEXT_DIR="'../shared/data/corpus'" --output_dir=cache/udhr
  python -m polyglot.train --gin_file=runs/demo.gin --gin_file=data/tokenized.gin \
      --gin.CACHE_DIR="'cache/udhr'"

The mixture is `--mixture`, else the gin files' `TrainConfig.mixture`; it must
be a text corpus (the embedded corpus, a text directory). Flags other than
these and `--gin.NAME=VALUE` go to Beam: the DirectRunner by default
(`--direct_num_workers=0 --direct_running_mode=multi_processing` uses every
core), or a cluster for corpora the size of CC-100:

  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \
      --requirements_file=requirements.txt      (or --setup_file=./setup.py)
  --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER
  --runner=SparkRunner --spark_master_url=spark://HOST:7077

Each text file is cut into parts of `--part_mb` MB at line starts, a shard each,
so a big language is tokenized by many workers. Run it again after a failure:
finished tasks are kept. See polyglot/data/tokenized.py for the format.
"""
import logging
import sys
import time

from polyglot.convert import cli
from polyglot.errors import ConfigError


class _Parser(cli.ArgumentParser):
  """Our flags; `--gin.NAME=VALUE` bindings and Beam's flags are kept apart."""

  def parse_args(self, args=None, namespace=None):  # pylint: disable=signature-differs
    ns, rest = self.parse_known_args(args, namespace)
    ns.gin_bindings = [a[len("--gin."):] for a in rest if a.startswith("--gin.")]
    ns.beam_args = [a for a in rest if not a.startswith("--gin.")]
    return ns


def parser() -> cli.ArgumentParser:
  p = _Parser(__doc__)
  p.add_argument("--gin_file", "--gin-file", action="append", default=[],
                 help="gin file (repeatable) that registers the mixture, e.g. runs/demo.gin")
  p.add_argument("--mixture", help="the mixture to cache (default: TrainConfig.mixture)")
  p.add_argument("--output_dir", "--output-dir", required=True,
                 help="the cache's folder, a local path or gs:// URL (one mixture per folder)")
  p.add_argument("--part_mb", "--part-mb", type=cli.positive_int, default=256,
                 help="text per shard and unit of work, in MB (default 256)")
  return p


def check_beam_args(beam_args: list[str]) -> None:
  """ConfigError for a flag that neither this tool nor Beam knows."""
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  known = pipeline_options.PipelineOptions([]).get_all_options()
  for arg in beam_args:
    name = arg.lstrip("-").split("=", 1)[0]
    if not arg.startswith("--") or name not in known:
      raise ConfigError(f"unrecognised argument {arg!r}: use this tool's flags (see --help), "
                        "--gin.NAME=VALUE, or a Beam pipeline option such as --runner=...")


def cache(args) -> str:
  import tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (the embedded corpus)
  from polyglot import paths, train  # pylint: disable=g-import-not-at-top
  from polyglot.data import tokenized  # pylint: disable=g-import-not-at-top
  logging.disable(logging.WARNING)  # Beam warns at import of clients a text job never uses
  try:
    import apache_beam  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ConfigError("Apache Beam is not installed: pip install -e '.[beam]'") from None
  finally:
    logging.disable(logging.NOTSET)
  check_beam_args(args.beam_args)
  if not args.gin_file and not args.mixture:
    args.gin_file = ["runs/demo.gin"]
  run = train.parse_gin(args.gin_file, args.gin_bindings) if args.gin_file else None
  mixture = args.mixture or run.train.mixture
  output_dir = paths.resolve(args.output_dir)
  start = time.perf_counter()
  parts, _ = tokenized.plan(mixture, output_dir, args.part_mb << 20)
  description = tokenized.write(mixture, output_dir, args.beam_args, args.part_mb << 20)
  seconds = time.perf_counter() - start
  return (f"cached {mixture}: {len(description['tasks'])} tasks, {len(parts)} shards written "
          f"({len(description['tasks']) - len({p.task for p in parts})} tasks kept) in "
          f"{seconds:.1f} s -> {output_dir}")


def main(argv=None) -> int:
  return cli.main(parser(), cache, argv)


if __name__ == "__main__":
  sys.exit(main())
