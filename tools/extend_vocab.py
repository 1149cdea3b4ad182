"""Extends a checkpoint's vocabulary for new languages (the Glot500 recipe).

  python tools/extend_vocab.py --checkpoint_dir=ckpt/xlmr-base --text_dir=/data/new_langs \\
      --vocab_size=32000 --init=mean --output_dir=ckpt/xlmr-ext

trains a SentencePiece model on the new languages' text (a folder of
<language>.txt files, or a registered mixture with --mixture), appends the
pieces the checkpoint's vocabulary lacks, grows the word embeddings and MLM
decoder bias (old rows unchanged, new rows by --init: 'normal' with
--init_std, or 'mean' of the piece's old sub-token rows) and writes step 0 of
a new checkpoint for gin/runs/continue_from_hf.gin. See
polyglot/convert/vocab_extension.py.
"""
import sys

from polyglot import paths
from polyglot.convert import cli


def extend(args) -> str:
  import tasks  # pylint: disable=g-import-not-at-top  (registers mixtures)
  from polyglot.convert import files, vocab_extension  # pylint: disable=g-import-not-at-top
  from polyglot.data import mixtures, vocab  # pylint: disable=g-import-not-at-top
  out = files.check_output(args.output_dir, overwrite=args.overwrite, source=args.checkpoint_dir)
  cfg = vocab_extension.ExtensionConfig(init=args.init, init_std=args.init_std, seed=args.seed)
  vocab_cfg = vocab.VocabConfig(vocab_size=args.vocab_size,
                                character_coverage=args.character_coverage,
                                sample_size=args.sample_size, seed=args.seed)
  name = args.mixture
  if args.text_dir:
    name = tasks.register_text_directory(args.text_dir, alpha=args.alpha).name
  mixtures.get_provider(name)  # an unknown mixture is refused before anything is loaded
  base = vocab_extension.load_base(args.checkpoint_dir, args.step)  # before the training
  new = vocab.train_from_mixture(name, vocab_cfg)
  done = vocab_extension.extend(base, args.checkpoint_dir, new, out, cfg)
  return (f"wrote {done.directory}: {done.added} pieces of {name!r} added, "
          f"vocab_size={done.vocab_size}")


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__)
  p.add_argument("--checkpoint_dir", "--checkpoint-dir", type=paths.resolve, required=True,
                 help="the masked_lm checkpoint to extend")
  p.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
  p.add_argument("--output_dir", "--output-dir", type=paths.resolve, required=True,
                 help="where to write the extended checkpoint")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--text_dir", "--text-dir", type=paths.resolve,
                      help="a folder of <language>.txt[.gz|.xz] files")
  source.add_argument("--mixture", help="a registered seqio mixture (see tasks/)")
  p.add_argument("--alpha", type=float, default=0.3, help="sampling temperature, --text_dir")
  p.add_argument("--vocab_size", "--vocab-size", type=int, default=8000,
                 help="ids of the new languages' SentencePiece model (specials included)")
  p.add_argument("--character_coverage", "--character-coverage", type=float,
                 default=0.9995)
  p.add_argument("--sample_size", "--sample-size", type=int, default=100_000,
                 help="sentences sampled")
  p.add_argument("--init", choices=("normal", "mean"), default="normal",
                 help="how new embedding rows start")
  p.add_argument("--init_std", "--init-std", type=float, default=0.02, help="std of 'normal'")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--overwrite", action="store_true",
                 help="replace the checkpoint of an existing, non-empty output directory")
  return p


def main(argv=None) -> int:
  return cli.main(parser(), extend, argv)


if __name__ == "__main__":
  sys.exit(main())
