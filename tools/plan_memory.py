"""Per-device memory of a training step for a preset and a mesh, on fake CPU devices.

  python tools/plan_memory.py --model=large --mesh=fsdp=8 --batch=64 --seq=512
  python tools/plan_memory.py --model=moe_large_e64 --mesh=data=8,expert=8 --batch=512

Nothing is allocated: the step is compiled for abstract inputs (see
`polyglot/memory.py`). The mesh sizes must be explicit; their product is the
number of fake devices.
"""
import argparse
import math
import os
import sys

MESH_AXES = ("data", "fsdp", "tensor", "expert")


def parse_mesh(text: str) -> dict[str, int]:
  sizes = {}
  for item in text.split(","):
    name, _, value = item.partition("=")
    if name not in MESH_AXES or not value.isdigit() or int(value) < 1:
      sys.exit(f"--mesh item {item!r} is invalid: use axis=size with axis in {MESH_AXES}, "
               "e.g. --mesh=data=8,fsdp=8")
    sizes[name] = int(value)
  return sizes


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True, help="a preset in polyglot.models.PRESETS")
  p.add_argument("--mesh", required=True, help="axis=size,... over data,fsdp,tensor,expert")
  p.add_argument("--batch", type=int, required=True, help="global batch (sequences)")
  p.add_argument("--seq", type=int, default=512, help="sequence length")
  p.add_argument("--layers", type=int, help="override num_layers (compile time)")
  p.add_argument("--remat", help="override the remat policy, e.g. full")
  p.add_argument("--dtype", help="override the compute dtype, e.g. bfloat16")
  return p


def main() -> None:
  args = parser().parse_args()
  sizes = parse_mesh(args.mesh)
  # Must precede the first JAX import.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                             f"device_count={math.prod(sizes.values())}").strip()
  os.environ["JAX_PLATFORMS"] = "cpu"

  from polyglot import memory, models, sharding  # pylint: disable=g-import-not-at-top
  from polyglot.errors import PolyglotError  # pylint: disable=g-import-not-at-top

  try:
    overrides = {k: v for k, v in (("num_layers", args.layers), ("remat", args.remat),
                                   ("dtype", args.dtype)) if v}
    cfg = models.preset(args.model, **overrides)
    mesh = sharding.make_mesh(sharding.MeshConfig(**{"data": 1, **sizes}))
    result = memory.plan(cfg, mesh, batch_size=args.batch, seq_len=args.seq)
  except PolyglotError as e:
    sys.exit(f"error: {e}")
  gib = 2.0 ** 30
  print(f"model={args.model} layers={cfg.num_layers} dtype={cfg.dtype} remat={cfg.remat} "
        f"mesh={dict(mesh.shape)} batch={args.batch}x{args.seq}")
  for name in ("params", "optimizer", "batch", "temp", "peak"):
    print(f"  {name:<10} {getattr(result, name) / gib:9.3f} GiB per device")
  print(f"  compiled in {result.compile_seconds:.0f} s")


if __name__ == "__main__":
  main()
