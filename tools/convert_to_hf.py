"""Exports a polyglot checkpoint as a Hugging Face XLM-R model directory.

  python tools/convert_to_hf.py --checkpoint_dir=workdir/demo --output_dir=hf/demo

writes config.json, model.safetensors and the tokenizer files, so that
`AutoTokenizer`, `AutoModelForMaskedLM` (or the fine-tuned head's
`XLMRobertaFor*` class) and `pipeline("fill-mask", model="hf/demo")` load it
offline. MoE checkpoints have no transformers class and are refused. See
polyglot/convert/export.py.
"""
import sys

from polyglot import paths
from polyglot.convert import cli


def export(args) -> str:
  from polyglot.convert import export as export_lib  # pylint: disable=g-import-not-at-top
  done = export_lib.export_checkpoint(args.checkpoint_dir, args.output_dir, step=args.step,
                                      overwrite=args.overwrite)
  return (f"wrote {done.directory}: {done.architecture} from step {done.step}, "
          f"vocab_size={done.vocab_size}")


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__)
  p.add_argument("--checkpoint_dir", "--checkpoint-dir", type=paths.resolve, required=True,
                 help="a workdir or its checkpoints/ folder")
  p.add_argument("--step", type=int, default=None, help="the step to export (default: newest)")
  p.add_argument("--output_dir", "--output-dir", type=paths.resolve, required=True,
                 help="the Hugging Face model directory to write")
  p.add_argument("--overwrite", action="store_true",
                 help="replace the files of an existing, non-empty output directory")
  return p


def main(argv=None) -> int:
  return cli.main(parser(), export, argv)


if __name__ == "__main__":
  sys.exit(main())
