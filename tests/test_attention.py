"""Attention paths against a reference softmax attention, with padding and packed segments.

`jax.nn.dot_product_attention` is the fast path: XLA's fused implementation
everywhere and cuDNN flash attention on GPU (`attention_impl="cudnn"`). Both
must equal plain softmax attention under the encoder's mask: each token sees
its own segment; padding queries see every real key (as in HF).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyglot import models
from polyglot.errors import ConfigError
from polyglot.models import encoder

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
