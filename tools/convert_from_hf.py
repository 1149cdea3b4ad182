"""Converts a local Hugging Face XLM-R directory into a polyglot checkpoint (step 0).

  python tools/convert_from_hf.py --hf_dir=models/xlm-roberta-base --output_dir=ckpt/xlmr-base

The directory needs config.json, model.safetensors (or pytorch_model.bin,
read with torch.load(weights_only=True)) and sentencepiece.bpe.model. The
output holds checkpoints/0/ and sentencepiece.bpe.model; continue MLM
pretraining from it with gin/runs/continue_from_hf.gin. See
polyglot/convert/importer.py.
"""
import sys

from polyglot import paths
from polyglot.convert import cli


def convert(args) -> str:
  from polyglot.convert import importer  # pylint: disable=g-import-not-at-top
  done = importer.import_hf(args.hf_dir, args.output_dir, overwrite=args.overwrite)
  cfg = done.config
  return (f"wrote {done.directory}: {done.kind}, {cfg.num_layers} layers, hidden "
          f"{cfg.hidden_size}, vocab_size={cfg.vocab_size}")


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__)
  p.add_argument("--hf_dir", "--hf-dir", type=paths.resolve, required=True,
                 help="a local Hugging Face model directory")
  p.add_argument("--output_dir", "--output-dir", type=paths.resolve, required=True,
                 help="where to write the polyglot checkpoint")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the checkpoint of an existing, non-empty output directory")
  return p


def main(argv=None) -> int:
  return cli.main(parser(), convert, argv)


if __name__ == "__main__":
  sys.exit(main())
