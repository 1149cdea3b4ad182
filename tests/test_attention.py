"""Attention paths against a reference softmax attention, with padding and packed segments.

`jax.nn.dot_product_attention` is the fast path: XLA's fused implementation
everywhere and cuDNN flash attention on GPU (`attention_impl="cudnn"`). Both
must equal plain softmax attention under the encoder's mask: each token sees
its own segment; padding queries see every real key (as in HF). The Pallas
splash kernel (`attention_impl="splash"`, TPU; Pallas interpret mode here)
must equal it on the real tokens, values and gradients, alone and sharded.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyglot import models, sharding
from polyglot.errors import ConfigError
from polyglot.models import encoder, splash

B, L, H, K = 3, 24, 4, 16


def packed_segments() -> np.ndarray:
  """Row 0: one full sequence; row 1: three packed sequences; row 2: two and padding."""
  return np.array([[1] * L,
                   [1] * 7 + [2] * 12 + [3] * 5,
                   [1] * 9 + [2] * 6 + [0] * 9], np.int32)


def reference_attention(q, k, v, segment_ids) -> np.ndarray:
  """Softmax attention in float64: [b, l, h, k] inputs -> [b, l, h, k]."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("blhk,bmhk->bhlm", q, k) / np.sqrt(q.shape[-1])
  mask = np.asarray(encoder.attention_mask(jnp.asarray(segment_ids)))  # [b, 1, l, m]
  logits = np.where(mask, logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhlm,bmhk->blhk", probs, v)


def qkv(dtype):
  rng = np.random.default_rng(0)
  return [jnp.asarray(rng.standard_normal((B, L, H, K)), dtype) for _ in range(3)]


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_xla_attention_equals_reference_with_padding_and_segments(dtype, tol):
  q, k, v = qkv(dtype)
  segments = packed_segments()
  mask = encoder.attention_mask(jnp.asarray(segments))
  out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
  ref = reference_attention(q, k, v, segments)
  np.testing.assert_allclose(np.asarray(out, np.float64), ref, atol=tol, rtol=tol)
  # No information crosses a segment boundary: changing segment 1 of row 1 leaves 2 and 3 alone.
  v2 = v.at[1, :7].set(0)
  out2 = jax.nn.dot_product_attention(q, k, v2, mask=mask, implementation="xla")
  np.testing.assert_array_equal(np.asarray(out2[1, 7:]), np.asarray(out[1, 7:]))


def test_fast_path_equals_the_dropout_path_at_rate_zero_in_the_model():
  """The module's two branches (fused call, explicit softmax for dropout) agree."""
  cfg = models.preset("tiny", dropout_rate=0.0, attention_dropout_rate=0.0)
  attn = models.MaskedLM(cfg, rngs=nnx.Rngs(0)).encoder.layers[0].attention
  x = jnp.asarray(np.random.default_rng(1).standard_normal((B, L, cfg.hidden_size)), jnp.float32)
  mask = encoder.attention_mask(jnp.asarray(packed_segments()))
  q, k, v = attn.query(x), attn.key(x), attn.value(x)
  fused = jax.nn.dot_product_attention(q, k, v, mask=mask)
  explicit = attn._attention_with_dropout(q, k, v, mask, jax.random.key(0))  # rate 0: no drops
  np.testing.assert_allclose(fused, explicit, atol=1e-5, rtol=1e-5)


def test_cudnn_needs_bfloat16():
  with pytest.raises(ConfigError, match="attention_impl='cudnn'.*bfloat16"):
    models.preset("tiny", attention_impl="cudnn")
  models.preset("tiny", attention_impl="cudnn", dtype="bfloat16")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs a GPU")
def test_cudnn_attention_equals_xla_with_padding_and_segments():
  q, k, v = qkv(jnp.bfloat16)
  mask = encoder.attention_mask(jnp.asarray(packed_segments()))
  fast = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
  ref = reference_attention(q, k, v, packed_segments())
  np.testing.assert_allclose(np.asarray(fast, np.float64), ref, atol=2e-2, rtol=2e-2)


def _grads(attend, q, k, v, weights):
  """d/d(q, k, v) of sum(weights * attend(q, k, v)), in float32."""
  loss = lambda q, k, v: (attend(q, k, v).astype(jnp.float32) * weights).sum()
  return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_splash_attention_equals_reference_on_real_tokens(dtype, tol):
  """Values against float64 softmax attention; gradients of a loss on the real tokens
  against XLA attention's in float32 (padding queries attend elsewhere: splash.py)."""
  q, k, v = qkv(dtype)
  segments = packed_segments()
  real = segments > 0
  out = jax.jit(splash.attention)(q, k, v, jnp.asarray(segments))
  assert out.shape == q.shape and out.dtype == dtype
  ref = reference_attention(q, k, v, segments)
  np.testing.assert_allclose(np.asarray(out, np.float64)[real], ref[real], atol=tol, rtol=tol)
  weights = jnp.asarray(np.random.default_rng(2).standard_normal((B, L, H, K))
                        * real[:, :, None, None], jnp.float32)
  mask = encoder.attention_mask(jnp.asarray(segments))
  got = jax.jit(lambda *a: _grads(lambda q, k, v: splash.attention(q, k, v, segments),
                                  *a))(q, k, v, weights)
  want = _grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask),
                *(x.astype(jnp.float32) for x in (q, k, v)), weights)
  for name, g, w in zip("qkv", got, want):
    scale = float(jnp.abs(w).max())
    np.testing.assert_allclose(np.asarray(g, np.float32), w, atol=tol * scale, rtol=0,
                               err_msg=name)


def _positions(segments: np.ndarray) -> np.ndarray:
  """Each token's position within its segment (0 on padding)."""
  starts = np.zeros_like(segments)
  for b, row in enumerate(segments):
    for i in range(1, len(row)):
      starts[b, i] = starts[b, i - 1] if row[i] == row[i - 1] else i
  return (np.arange(segments.shape[1]) - starts) * (segments > 0)


def test_splash_model_sharded_equals_xla_model_on_one_device():
  """The tiny MaskedLM with splash attention under a data=2, fsdp=2, tensor=2 mesh (the
  kernel per shard of rows and heads: `jax.shard_map`) against the same weights with XLA
  attention unsharded: the loss on real tokens and every parameter's gradient."""
  cfg = models.preset("tiny", dropout_rate=0.0, attention_dropout_rate=0.0)
  segments = np.concatenate([packed_segments(), [[1] * 20 + [0] * 4]])  # 4 rows
  real = jnp.asarray(segments > 0)
  ids = jnp.asarray(np.random.default_rng(3).integers(3, cfg.vocab_size, segments.shape))
  inputs = (ids, jnp.asarray(segments), jnp.asarray(_positions(segments)))

  def loss(model):  # mean log-likelihood of each real token's own id
    logp = jax.nn.log_softmax(model(*inputs)[0].astype(jnp.float32))
    return -(jnp.take_along_axis(logp, ids[..., None], -1)[..., 0] * real).sum() / real.sum()

  def loss_and_grads(impl):
    model = models.MaskedLM(dataclasses.replace(cfg, attention_impl=impl), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s: nnx.value_and_grad(loss)(nnx.merge(graphdef, s)))(state)

  want_loss, want = loss_and_grads("xla")
  with sharding.use_mesh(sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))):
    got_loss, got = loss_and_grads("splash")
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=1e-6 * float(jnp.abs(w).max()) + 1e-9, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))
