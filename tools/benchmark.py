"""Throughput benchmarks; one subcommand per thing measured.

  python tools/benchmark.py data                    # embedded mixture at length 512: 1 core, all
  python tools/benchmark.py data --cores 1 --batches 100 --mixture embedded

`data` measures the host input pipeline (polyglot/data/pipeline.py): input
tokens per second of finished batches (tokenize, mix, shuffle, pack, mask,
batch), after the pipeline is built and warm. Each measurement runs in a fresh
process pinned to `--cores` CPUs (`os.sched_setaffinity`) with a tf.data
threadpool of that size; without `--cores` it runs one core, then all cores.
Results in docs/benchmarks.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def measure_data(args) -> dict:
  """One run of the input pipeline, in this process (already pinned to its cores)."""
  import tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registrations)
  from polyglot.data import pipeline  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  it = pipeline.make_iterator(args.mixture, length=args.length, batch_size=args.batch_size,
                              seed=0, shard_index=0, num_shards=1, num_threads=args.cores)
  built = time.perf_counter()
  next(it)
  first = time.perf_counter()
  for _ in range(args.warmup):
    next(it)
  timed = time.perf_counter()
  tokens = 0
  for _ in range(args.batches):
    tokens += int((next(it)["segment_ids"] > 0).sum())
  seconds = time.perf_counter() - timed
  return {"mixture": args.mixture, "length": args.length, "batch_size": args.batch_size,
          "cores": args.cores, "build_s": round(built - start, 1),
          "first_batch_s": round(first - built, 1), "batches": args.batches,
          "tokens_per_s": round(tokens / seconds)}


def run_data(args) -> None:
  if args.cores:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))
    from polyglot.errors import PolyglotError  # pylint: disable=g-import-not-at-top
    try:
      print(json.dumps(measure_data(args)))
    except PolyglotError as e:
      sys.exit(f"error: {e}")
    return
  print("| mixture | length | batch | cores | build s | first batch s | input tokens/s |")
  print("|---|---|---|---|---|---|---|")
  for cores in (1, len(os.sched_getaffinity(0))):
    command = [sys.executable, __file__, "data", "--cores", str(cores), "--mixture", args.mixture,
               "--length", str(args.length), "--batch-size", str(args.batch_size),
               "--batches", str(args.batches), "--warmup", str(args.warmup)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
      sys.exit(done.stderr.strip().splitlines()[-1])
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"| {r['mixture']} | {r['length']} | {r['batch_size']} | {r['cores']} | "
          f"{r['build_s']} | {r['first_batch_s']} | {r['tokens_per_s']:,} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  data = commands.add_parser("data", help="input pipeline tokens/s")
  data.add_argument("--mixture", default="embedded", help="a registered seqio mixture or task")
  data.add_argument("--length", type=int, default=512)
  data.add_argument("--batch-size", type=int, default=32, help="rows per batch")
  data.add_argument("--batches", type=int, default=100, help="batches timed")
  data.add_argument("--warmup", type=int, default=10, help="batches read before timing")
  data.add_argument("--cores", type=int, help="pin to this many cores (default: 1, then all)")
  data.set_defaults(run=run_data)
  args = parser.parse_args()
  args.run(args)


if __name__ == "__main__":
  main()
