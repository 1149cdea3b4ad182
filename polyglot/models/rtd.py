"""Replaced-token detection (ELECTRA; XLM-E): the generator and the detection head.

Shapes: b=batch, l=length, k=predicted positions per row, d=discriminator embed,
g=generator embed, v=vocab.

ELECTRA (Clark et al., ICLR 2020) pretrains the encoder, the discriminator, to
tell which tokens of its input a small masked LM, the generator, replaced;
XLM-E (Chi et al., ACL 2022) does it on multilingual text and on translation
pairs. As in ELECTRA (section 3.2 and its code's `embedding_size`), the
generator reads the discriminator's input embeddings (word, position and token
type tables and their LayerNorm: one set, trained by both losses), projects
them to its own width g, and its MLM decoder is tied to the shared word table.

`ReplacedTokenDetector` is a `MaskedLM` (the discriminator: encoder and MLM
head, so it evaluates, fine-tunes and exports like any XLM-R checkpoint) that
also holds `generator` and `rtd_head`; the loss is in
`polyglot/objectives/rtd.py`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from polyglot.models import layers
from polyglot.models.config import EncoderConfig
from polyglot.models.encoder import Encoder
from polyglot.models.heads import MaskedLM, MlmHead


def generator_config(cfg: EncoderConfig, size: float, num_layers: int | None = None
                     ) -> EncoderConfig:
  """The generator of discriminator `cfg`: `size` x its heads (at least one) at the same head
  width, so `size` x its hidden and MLP widths; its depth unless `num_layers`; dense.

  ELECTRA scales hidden size, MLP and heads by one multiplier, with the depth
  kept (its table 6: 1/3 for Base, 1/4 for Small and Large).
  """
  heads = max(1, round(cfg.num_heads * size))
  hidden = heads * cfg.head_dim
  return cfg.replace(hidden_size=hidden, num_heads=heads,
                     mlp_dim=max(1, round(cfg.mlp_dim * hidden / cfg.hidden_size)),
                     num_layers=num_layers or cfg.num_layers, moe=None)


class Generator(nnx.Module):
  """A small masked LM on the discriminator's embeddings: [b, l, d] -> logits [b, k, v]."""

  def __init__(self, cfg: EncoderConfig, embed_size: int, *, rngs: nnx.Rngs):
    self.project = layers.Dense(embed_size, cfg.hidden_size, ("embed", None), rngs=rngs,
                                init_std=cfg.initializer_range, dtype=cfg.dtype)
    self.encoder = Encoder(cfg, rngs=rngs, embeddings=False)
    self.lm_head = MlmHead(cfg.replace(hidden_size=embed_size, num_heads=1), rngs=rngs,
                           input_size=cfg.hidden_size)

  def __call__(self, embedded: jax.Array, segment_ids: jax.Array, word_embeddings: jax.Array,
               *, dropout_rng: jax.Array | None = None,
               predict_at: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """embedded: [b, l, d] (the shared embeddings' output), word_embeddings [v, d],
    predict_at [b, k] or None -> (float32 logits [b, k, v], aux)."""
    n = self.encoder.cfg.num_layers
    keys = None if dropout_rng is None else jax.random.split(dropout_rng, n)
    out = self.encoder.blocks(self.project(embedded), segment_ids, keys)
    hidden = out.last_hidden  # [b, l, g]
    if predict_at is not None:
      hidden = jnp.take_along_axis(hidden, predict_at[..., None], axis=1)  # [b, k, g]
    return self.lm_head(hidden, word_embeddings), out.aux


class DetectionHead(nnx.Module):
  """ELECTRA's discriminator head: dense, gelu, dense to one logit per token; [b, l, d] ->
  float32 [b, l] (d x d + d per position, not the MLM decoder's d x v)."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, init_std=cfg.initializer_range, dtype=cfg.dtype)
    self.dense = layers.Dense(cfg.hidden_size, cfg.hidden_size, ("embed", None), **kw)
    self.out = layers.Dense(cfg.hidden_size, 1, ("embed", None), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(layers.gelu(self.dense(x)))[..., 0].astype(jnp.float32)


class ReplacedTokenDetector(MaskedLM):
  """The discriminator (`MaskedLM`: encoder and MLM head), the generator and the detection
  head. Called, it is the discriminator's masked LM."""

  def __init__(self, cfg: EncoderConfig, generator: EncoderConfig, *, rngs: nnx.Rngs):
    super().__init__(cfg, rngs=rngs)
    self.generator = Generator(generator, cfg.hidden_size, rngs=rngs)
    self.rtd_head = DetectionHead(cfg, rngs=rngs)
