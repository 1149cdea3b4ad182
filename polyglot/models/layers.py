"""Leaf layers shared by the encoder, MoE blocks and heads.

Shapes: b=batch, l=length, d=embed, f=mlp, v=vocab.

Parameters are float32 and carry logical axis names (`polyglot/sharding.py`)
as `out_sharding` metadata; they are created unsharded (`eager_sharding=False`)
and placed by the caller's `jax.jit` out-shardings, so building a model never
depends on a mesh.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = nnx.initializers.Initializer

zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def normal(stddev: float) -> Initializer:
  return nnx.initializers.normal(stddev)


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int],
          axes: Sequence[str | None]) -> nnx.Param:
  """A float32 parameter annotated with logical axes, one name per dimension."""
  assert len(shape) == len(axes), (shape, axes)
  return nnx.Param(init(rngs.params(), tuple(shape), jnp.float32),
                   out_sharding=tuple(axes), eager_sharding=False)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when `rng` is None (evaluation) or `rate` is 0. An element
  is dropped when its `dropout_bits` are below rate * 2^32."""
  if rng is None or rate == 0.0:
    return x
  keep = dropout_bits(rng, x.shape) >= jnp.uint32(min(round(rate * 2**32), 2**32 - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _fmix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's finalizer: a bijection of uint32 whose output bits each depend on
  every input bit."""
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def dropout_bits(rng: jax.Array, shape: Sequence[int]) -> jax.Array:
  """uint32 `shape`: 32 random bits per element, a hash of the key and the element's index.

  Elementwise integer arithmetic on indices (`iota`), which XLA fuses into the op that
  uses the mask: on a CPU, threefry's `jax.random.bernoulli` cost 12 to 24% of the `small`
  preset's forward and backward, these masks too little to measure (docs/benchmarks.md,
  "Train step"). MurmurHash3's finalizer is not a cryptographic generator: dropout needs
  rates and independence, which `tests/test_dropout.py` checks. The index is (row,
  column) over [shape[0], the rest], so arrays of 2^32 elements and more get distinct bits
  per row; a hash of the key and the row keys each row. Like the iota it is computed from,
  the mask is the same however the array is sharded.
  """
  key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
  key = key.reshape(-1).astype(jnp.uint32)
  rows = shape[0] if len(shape) > 1 else 1
  cols = math.prod(shape) // max(rows, 1)
  if cols >= 2**32:
    raise ValueError(f"dropout on {tuple(shape)}: the rows of {cols} elements need 2^32 or "
                     "more indices")
  row = jax.lax.broadcasted_iota(jnp.uint32, (rows, cols), 0)
  col = jax.lax.broadcasted_iota(jnp.uint32, (rows, cols), 1)
  row_key = _fmix32(_fmix32(row ^ key[0]) + key[-1])
  return _fmix32(_fmix32(col ^ row_key) + key[0]).reshape(shape)


def split_rng(rng: jax.Array | None, n: int) -> list[jax.Array | None]:
  return [None] * n if rng is None else list(jax.random.split(rng, n))


class Dense(nnx.Module):
  """y = x @ w + b over the last axis: [..., d_in] -> [..., d_out]."""

  def __init__(self, d_in: int, d_out: int, axes: tuple[str | None, str | None], *,
               rngs: nnx.Rngs, init_std: float = 0.02, dtype=jnp.float32):
    self.kernel = param(rngs, normal(init_std), (d_in, d_out), axes)
    self.bias = param(rngs, zeros, (d_out,), axes[1:])
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis, computed in float32: [..., d] -> [..., d]."""

  def __init__(self, dim: int, *, eps: float, rngs: nnx.Rngs, dtype=jnp.float32):
    self.scale = param(rngs, ones, (dim,), ("embed",))
    self.bias = param(rngs, zeros, (dim,), ("embed",))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as XLM-R's `hidden_act="gelu"`."""
  return jax.nn.gelu(x, approximate=False)
