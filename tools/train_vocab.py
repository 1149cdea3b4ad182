"""Trains a SentencePiece vocabulary (XLM-R ids) on a temperature-sampled mixture.

  python tools/train_vocab.py --output vocab.model                     # embedded corpus
  python tools/train_vocab.py --text-dir /data/cc100 --vocab-size 250002 \\
      --sample-size 10000000 --output cc100.model

The sample is drawn from the mixture's train split at its rates (alpha 0.3 by
default, `--alpha`); `--vocab-size` counts every id, `<s> <pad> </s> <unk>`
and the final `<mask>` included (see polyglot/data/vocab.py).
"""
import argparse
import pathlib
import sys
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group()
  source.add_argument("--mixture", default="embedded", help="a registered seqio mixture")
  source.add_argument("--text-dir", help="a folder of <language>.txt[.gz|.xz] files")
  parser.add_argument("--alpha", type=float, default=0.3, help="temperature, with --text-dir")
  parser.add_argument("--output", required=True, help="where to write the .model file")
  parser.add_argument("--vocab-size", type=int, default=8000)
  parser.add_argument("--character-coverage", type=float, default=0.9995)
  parser.add_argument("--sample-size", type=int, default=100_000, help="sentences sampled")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()

  import tasks  # pylint: disable=g-import-not-at-top  (registers the embedded mixture)
  from polyglot.data import vocab  # pylint: disable=g-import-not-at-top
  from polyglot.errors import PolyglotError  # pylint: disable=g-import-not-at-top

  try:
    cfg = vocab.VocabConfig(vocab_size=args.vocab_size,
                            character_coverage=args.character_coverage,
                            sample_size=args.sample_size, seed=args.seed,
                            num_threads=args.threads)
    name = args.mixture
    if args.text_dir:
      name = tasks.register_text_directory(args.text_dir, alpha=args.alpha).name
    start = time.time()
    trained = vocab.train_from_mixture(name, cfg)
  except PolyglotError as e:
    sys.exit(f"error: {e}")
  output = pathlib.Path(args.output)
  output.parent.mkdir(parents=True, exist_ok=True)
  output.write_bytes(trained.model_bytes)
  print(f"{output}: vocab_size={trained.vocab_size} (mask_id={trained.mask_id}) from "
        f"{cfg.sample_size} sentences of {name!r} in {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
