"""Per-device memory of a training step for a preset and a mesh, on fake CPU devices.

  python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512
  python tools/plan_memory.py --model=moe_large_e64 --mesh=data=8,expert=8 --batch=512
  python tools/plan_memory.py --model=base --mesh=fsdp=8 --batch=256 --seq=512 --objective=rtd

Nothing is allocated: the step is compiled for abstract inputs (see
`polyglot/memory.py`). The mesh sizes must be explicit; their product is the
number of fake devices.
"""
import argparse
import math
import os
import sys

from polyglot.convert import cli

MESH_AXES = ("data", "fsdp", "tensor", "expert")


def parse_mesh(text: str) -> dict[str, int]:
  """An argparse type: 'data=8,fsdp=8' -> {"data": 8, "fsdp": 8}."""
  sizes = {}
  for item in text.split(","):
    name, _, value = item.partition("=")
    if name not in MESH_AXES or not value.isdigit() or int(value) < 1:
      raise argparse.ArgumentTypeError(
          f"item {item!r} is invalid: use axis=size with axis in {MESH_AXES} and size >= 1, "
          "e.g. --mesh=data=8,fsdp=8")
    sizes[name] = int(value)
  return sizes


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__)
  p.add_argument("--model", required=True, help="a preset in polyglot.models.PRESETS")
  p.add_argument("--mesh", type=parse_mesh, required=True,
                 help="axis=size,... over data,fsdp,tensor,expert")
  p.add_argument("--batch", type=cli.positive_int, required=True, help="global batch (sequences)")
  p.add_argument("--seq", type=cli.positive_int,
                 help="sequence length (default: the preset's max_len, 512 for XLM-R)")
  p.add_argument("--layers", type=cli.positive_int, help="override num_layers (compile time)")
  p.add_argument("--remat", help="override the remat policy, e.g. full")
  p.add_argument("--dtype", help="override the compute dtype, e.g. bfloat16")
  p.add_argument("--objective", default="mlm", choices=("mlm", "rtd"),
                 help="mlm (XLM-R), or rtd: replaced-token detection (XLM-E's MRTD) with its "
                      "generator at 1/3 of the width")
  return p


def plan(args) -> str:
  # Must precede the first JAX import.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                             f"device_count={math.prod(args.mesh.values())}").strip()
  os.environ["JAX_PLATFORMS"] = "cpu"

  from polyglot import memory, models, sharding  # pylint: disable=g-import-not-at-top
  from polyglot.errors import ConfigError  # pylint: disable=g-import-not-at-top

  overrides = {k: v for k, v in (("num_layers", args.layers), ("remat", args.remat),
                                 ("dtype", args.dtype)) if v is not None}
  cfg = models.preset(args.model, **overrides)
  seq = args.seq or cfg.max_len
  if seq > cfg.max_len:
    raise ConfigError(f"--seq={seq} is invalid: {args.model} takes at most "
                      f"max_len={cfg.max_len} tokens; use --seq <= {cfg.max_len}")
  mesh = sharding.make_mesh(sharding.MeshConfig(**{"data": 1, **args.mesh}))
  result = memory.plan(cfg, mesh, batch_size=args.batch, seq_len=seq, objective=args.objective)
  gib = 2.0 ** 30
  lines = [f"model={args.model} layers={cfg.num_layers} dtype={cfg.dtype} remat={cfg.remat} "
           f"mesh={dict(mesh.shape)} batch={args.batch}x{seq} objective={args.objective}"]
  lines += [f"  {name:<10} {getattr(result, name) / gib:9.3f} GiB per device"
            for name in ("params", "optimizer", "batch", "temp", "peak")]
  lines.append(f"  compiled in {result.compile_seconds:.0f} s")
  return "\n".join(lines)


def main(argv=None) -> int:
  return cli.main(parser(), plan, argv)


if __name__ == "__main__":
  sys.exit(main())
