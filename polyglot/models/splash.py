"""Self-attention through Pallas splash attention, the TPU kernel MaxText trains with.

`attention(q, k, v, segment_ids)` is `jax.nn.dot_product_attention` under the
encoder's mask, on the real tokens: a token attends to the tokens of its own
segment. The kernel (`jax.experimental.pallas.ops.tpu.splash_attention`) is
block-sparse flash attention: the segment ids are its mask, so the [b, h, l, m]
logits are never formed and blocks of keys in no query's segment are skipped.

Differences from the reference path, none on real tokens:
- padding queries (segment 0) attend to the other padding positions rather
  than to every real key (HF's choice, `encoder.attention_mask`); no real
  token attends to them either way, so their outputs never reach a real one;
- the length is padded with segment 0 to a multiple of `BLOCK` (the kernel's
  block of queries and keys), and cut back after.

Under a mesh (`sharding.use_mesh`) the kernel runs per shard (`jax.shard_map`),
rows over the mesh axes of "batch" and heads over those of "heads"; a kernel
is not partitioned by XLA. Off TPU it runs in Pallas interpret mode, which is
what tests do on CPU: exact, and slow.
"""
from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

from polyglot import sharding

BLOCK = 128  # queries and keys per kernel block (the TPU's lane width)
_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _kernel(heads: int, length: int, interpret: bool) -> kernel_lib.SplashAttentionKernel:
  """The kernel for [heads, length, k] inputs: full attention, restricted by segment ids."""
  if interpret:
    _log.warning("splash attention runs in Pallas interpret mode off TPU: exact but slow; "
                 "use EncoderConfig.attention_impl='xla' here")
  mask = mask_lib.MultiHeadMask([mask_lib.FullMask((length, length))] * heads)
  sizes = kernel_lib.BlockSizes(
      block_q=BLOCK, block_kv=BLOCK, block_kv_compute=BLOCK,
      block_q_dkv=BLOCK, block_kv_dkv=BLOCK, block_kv_dkv_compute=BLOCK,
      block_q_dq=BLOCK, block_kv_dq=BLOCK)
  with jax.ensure_compile_time_eval():  # its block tables are constants, not the trace's
    return kernel_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                      interpret=interpret)


def _local(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """One shard: q, k, v [b, l, h, k], segment_ids [b, l] -> [b, l, h, k]."""
  b, l, h, _ = q.shape
  padded = -(-l // BLOCK) * BLOCK
  if padded != l:  # padding of segment 0 attends to nothing real
    q, k, v = (jnp.pad(x, ((0, 0), (0, padded - l), (0, 0), (0, 0))) for x in (q, k, v))
    segment_ids = jnp.pad(segment_ids, ((0, 0), (0, padded - l)))
  kernel = _kernel(h, padded, jax.default_backend() != "tpu")
  q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)  # the kernel does not scale

  def row(q, k, v, s):  # [h, l, k] each, s [l]
    return kernel(q, k, v, segment_ids=kernel_lib.SegmentIds(q=s, kv=s))

  heads_first = lambda x: x.transpose(0, 2, 1, 3)  # [b, l, h, k] <-> [b, h, l, k]
  y = jax.vmap(row)(heads_first(q), heads_first(k), heads_first(v), segment_ids)
  return heads_first(y)[:, :l].astype(v.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """q, k, v [b, l, h, k], segment_ids [b, l] (0: padding) -> [b, l, h, k]."""
  rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return _local(q, k, v, segment_ids)
  spec = sharding.logical_to_spec(("batch", None, "heads", None), rules, q.shape, mesh)
  return jax.shard_map(_local, mesh=mesh, in_specs=(spec, spec, spec, jax.P(spec[0], None)),
                       out_specs=spec, check_vma=False)(q, k, v, segment_ids)
