"""Logical axis names, the rules that map them to mesh axes, and constraints.

Parameters and activations are annotated with logical names only; this module
is the one place that maps them to the mesh axes `data, fsdp, tensor, expert`.
Changing a parallel layout means changing these rules or the mesh shape (gin),
never the model.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn

MESH_AXES = ("data", "fsdp", "tensor", "expert")
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv", "mlp", "vocab", "expert")

# Logical name -> mesh axis (or axes), each logical name once (MaxText-style).
# FSDP shards weights along `embed`; tensor parallelism splits heads, MLP and
# vocabulary (Megatron); experts live on their own axis (GShard).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("expert", "expert"),
)

LogicalAxes = Sequence[str | None]


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `logical_axis_rules`."""
  return nn.with_logical_constraint(x, tuple(axes))
