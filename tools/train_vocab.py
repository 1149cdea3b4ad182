"""Trains a SentencePiece vocabulary (XLM-R ids) on a temperature-sampled mixture.

  python tools/train_vocab.py --output vocab.model                     # embedded corpus
  python tools/train_vocab.py --text_dir /data/cc100 --vocab_size 250002 \\
      --sample_size 10000000 --output cc100.model

The sample is drawn from the mixture's train split at its rates (alpha 0.3 by
default, `--alpha`); `--vocab_size` counts every id, `<s> <pad> </s> <unk>`
and the final `<mask>` included (see polyglot/data/vocab.py). The output path
is checked before training: a directory, or a place that cannot be written,
is refused before any time is spent.
"""
import sys
import time

from polyglot import paths
from polyglot.convert import cli


def train(args) -> str:
  output = args.output
  cli.check_output_file(output, "--output", "vocab.model")  # before training, not after
  import tasks  # pylint: disable=g-import-not-at-top  (registers the embedded mixture)
  from polyglot.data import vocab  # pylint: disable=g-import-not-at-top
  from polyglot.errors import DataError  # pylint: disable=g-import-not-at-top
  cfg = vocab.VocabConfig(vocab_size=args.vocab_size, character_coverage=args.character_coverage,
                          sample_size=args.sample_size, seed=args.seed,
                          num_threads=args.threads)
  name = args.mixture
  if args.text_dir:
    name = tasks.register_text_directory(args.text_dir, alpha=args.alpha).name
  start = time.time()
  trained = vocab.train_from_mixture(name, cfg)
  try:
    paths.write_bytes(output, trained.model_bytes)
  except OSError as e:
    raise DataError(f"--output {output} cannot be written ({e}): pass a path in a writable "
                    "directory") from None
  return (f"{output}: vocab_size={trained.vocab_size} (mask_id={trained.mask_id}) from "
          f"{cfg.sample_size} sentences of {name!r} in {time.time() - start:.0f} s")


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__)
  source = p.add_mutually_exclusive_group()
  source.add_argument("--mixture", default="embedded", help="a registered seqio mixture")
  source.add_argument("--text_dir", "--text-dir", type=paths.resolve,
                      help="a folder of <language>.txt[.gz|.xz] files")
  p.add_argument("--alpha", type=float, default=0.3, help="temperature, with --text_dir")
  p.add_argument("--output", type=paths.resolve, required=True,
                 help="where to write the .model file")
  p.add_argument("--vocab_size", "--vocab-size", type=int, default=8000)
  p.add_argument("--character_coverage", "--character-coverage", type=float, default=0.9995)
  p.add_argument("--sample_size", "--sample-size", type=int, default=100_000,
                 help="sentences sampled")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=int, default=2)
  return p


def main(argv=None) -> int:
  return cli.main(parser(), train, argv)


if __name__ == "__main__":
  sys.exit(main())
