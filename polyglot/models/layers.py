"""Leaf layers shared by the encoder, MoE blocks and heads.

Shapes: b=batch, l=length, d=embed, f=mlp, v=vocab.

Parameters are float32 and carry logical axis names (`polyglot/sharding.py`)
as `out_sharding` metadata; they are created unsharded (`eager_sharding=False`)
and placed by the caller's `jax.jit` out-shardings, so building a model never
depends on a mesh.
"""
from __future__ import annotations

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
  """Inverted dropout; identity when `rng` is None (evaluation) or `rate` is 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


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
