"""Task heads, and the encoder-with-head models that match HF's `XLMRobertaFor*`.

Shapes: b=batch, l=length, d=embed, v=vocab, n=labels.

Every model takes the encoder inputs `(input_ids, segment_ids=None,
positions=None)` and keyword `dropout_rng` (dropout is on iff given), and
returns `(outputs, aux)`, where aux holds the MoE losses and router statistics.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from polyglot.errors import ConfigError
from polyglot.models import layers
from polyglot.models.config import EncoderConfig
from polyglot.models.encoder import Encoder, default_segments

POOLINGS = ("mean", "first")


class MlmHead(nnx.Module):
  """dense, gelu, LayerNorm, then the decoder tied to the word embeddings, own bias.

  `input_size` is the width of the hidden states it reads when it is not the
  embeddings' (`cfg.hidden_size`): the narrower RTD generator's (rtd.py).
  """

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, input_size: int | None = None):
    self.dense = layers.Dense(input_size or cfg.hidden_size, cfg.hidden_size, ("embed", None),
                              rngs=rngs, init_std=cfg.initializer_range, dtype=cfg.dtype)
    self.norm = layers.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, rngs=rngs,
                                 dtype=cfg.dtype)
    self.bias = layers.param(rngs, layers.zeros, (cfg.vocab_size,), ("vocab",))
    self.dtype = cfg.dtype

  def __call__(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    """x: [b, l, d], word_embeddings: [v, d] -> float32 logits [b, l, v]."""
    x = self.norm(layers.gelu(self.dense(x)))
    logits = jnp.einsum("bld,vd->blv", x, word_embeddings.astype(self.dtype))
    return logits.astype(jnp.float32) + self.bias[...]


class SequenceClassificationHead(nnx.Module):
  """HF `XLMRobertaClassificationHead`: dropout, dense, tanh, dropout, out_proj on `<s>`."""

  def __init__(self, cfg: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, init_std=cfg.initializer_range, dtype=cfg.dtype)
    self.dense = layers.Dense(cfg.hidden_size, cfg.hidden_size, ("embed", None), **kw)
    self.out_proj = layers.Dense(cfg.hidden_size, num_labels, ("embed", None), **kw)
    self.rate = cfg.dropout_rate

  def __call__(self, x: jax.Array, rng: jax.Array | None) -> jax.Array:
    """x: [b, l, d] -> float32 logits [b, n]."""
    r1, r2 = layers.split_rng(rng, 2)
    h = jnp.tanh(self.dense(layers.dropout(x[:, 0], self.rate, r1)))
    return self.out_proj(layers.dropout(h, self.rate, r2)).astype(jnp.float32)


class TokenClassificationHead(nnx.Module):
  """Dropout and a linear layer per token: [b, l, d] -> [b, l, n]."""

  def __init__(self, cfg: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
    self.classifier = layers.Dense(cfg.hidden_size, num_labels, ("embed", None), rngs=rngs,
                                   init_std=cfg.initializer_range, dtype=cfg.dtype)
    self.rate = cfg.dropout_rate

  def __call__(self, x: jax.Array, rng: jax.Array | None) -> jax.Array:
    return self.classifier(layers.dropout(x, self.rate, rng)).astype(jnp.float32)


class QuestionAnsweringHead(nnx.Module):
  """Span start and end logits: [b, l, d] -> ([b, l], [b, l])."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.qa_outputs = layers.Dense(cfg.hidden_size, 2, ("embed", None), rngs=rngs,
                                   init_std=cfg.initializer_range, dtype=cfg.dtype)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits = self.qa_outputs(x).astype(jnp.float32)  # [b, l, 2]
    return logits[..., 0], logits[..., 1]


def pool(hidden: jax.Array, segment_ids: jax.Array, pooling: str) -> jax.Array:
  """Sentence embeddings: [b, l, d] hidden, [b, l] segments -> [b, d] float32.

  "mean" averages the non-padding tokens (special tokens included, as XTREME's
  retrieval does); "first" takes `<s>`.
  """
  if pooling == "first":
    return hidden[:, 0].astype(jnp.float32)
  if pooling != "mean":
    raise ConfigError(f"pooling={pooling!r} is unknown; use one of {POOLINGS}")
  w = (segment_ids > 0).astype(jnp.float32)[..., None]  # [b, l, 1]
  return (hidden.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)


class MaskedLM(nnx.Module):
  """`XLMRobertaForMaskedLM`: logits [b, l, v], or [b, k, v] at `predict_at`.

  `predict_at` [b, k] (indices into each row) runs the decoder at those
  positions only, as fairseq does at the masked tokens: with 15% masking and
  k ~ 0.3 l it does a third of the full head's work.
  """

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.lm_head = MlmHead(cfg, rngs=rngs)

  def __call__(self, input_ids, segment_ids=None, positions=None, *, dropout_rng=None,
               predict_at: jax.Array | None = None):
    out = self.encoder(input_ids, segment_ids, positions, dropout_rng=dropout_rng)
    hidden = out.last_hidden  # [b, l, d]
    if predict_at is not None:
      hidden = jnp.take_along_axis(hidden, predict_at[..., None], axis=1)  # [b, k, d]
    return self.lm_head(hidden, self.encoder.embeddings.word[...]), out.aux


class SequenceClassifier(nnx.Module):
  """`XLMRobertaForSequenceClassification`: logits [b, n]."""

  def __init__(self, cfg: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.classifier = SequenceClassificationHead(cfg, num_labels, rngs=rngs)

  def __call__(self, input_ids, segment_ids=None, positions=None, *, dropout_rng=None):
    r_enc, r_head = layers.split_rng(dropout_rng, 2)
    out = self.encoder(input_ids, segment_ids, positions, dropout_rng=r_enc)
    return self.classifier(out.last_hidden, r_head), out.aux


class MultipleChoice(nnx.Module):
  """Multiple choice (HF `XLMRobertaForMultipleChoice`'s task): one score per (context,
  choice) row from the `<s>` head with one output, logits [b, c] over each example's c
  choices. The head is `SequenceClassificationHead` (dense, tanh, projection), the shape of
  HF's pooler and classifier."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.classifier = SequenceClassificationHead(cfg, 1, rngs=rngs)

  def __call__(self, input_ids, segment_ids=None, positions=None, *, dropout_rng=None):
    """input_ids [b, c, l] -> logits [b, c]."""
    b, c, length = input_ids.shape
    flat = lambda x: None if x is None else x.reshape(b * c, length)  # noqa: E731
    r_enc, r_head = layers.split_rng(dropout_rng, 2)
    out = self.encoder(flat(input_ids), flat(segment_ids), flat(positions), dropout_rng=r_enc)
    return self.classifier(out.last_hidden, r_head).reshape(b, c), out.aux


class TokenClassifier(nnx.Module):
  """`XLMRobertaForTokenClassification`: logits [b, l, n]."""

  def __init__(self, cfg: EncoderConfig, num_labels: int, *, rngs: nnx.Rngs):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.classifier = TokenClassificationHead(cfg, num_labels, rngs=rngs)

  def __call__(self, input_ids, segment_ids=None, positions=None, *, dropout_rng=None):
    r_enc, r_head = layers.split_rng(dropout_rng, 2)
    out = self.encoder(input_ids, segment_ids, positions, dropout_rng=r_enc)
    return self.classifier(out.last_hidden, r_head), out.aux


class QuestionAnswering(nnx.Module):
  """`XLMRobertaForQuestionAnswering`: (start, end) logits, [b, l] each."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.qa_head = QuestionAnsweringHead(cfg, rngs=rngs)

  def __call__(self, input_ids, segment_ids=None, positions=None, *, dropout_rng=None):
    out = self.encoder(input_ids, segment_ids, positions, dropout_rng=dropout_rng)
    return self.qa_head(out.last_hidden), out.aux


def sentence_embeddings(encoder: Encoder, input_ids: jax.Array, *, layer: int,
                        pooling: str = "mean") -> jax.Array:
  """Pooled hidden states of `layer` (0 = embeddings, L = last): [b, l] -> [b, d].

  XTREME's retrieval tasks use the mean of a middle layer (Hu et al., 2020, section 4).
  """
  n = encoder.cfg.num_layers
  if not -n - 1 <= layer <= n:
    raise ConfigError(f"layer={layer} is out of range for a {n}-layer encoder; use 0..{n}")
  out = encoder(input_ids, output_hidden_states=True)
  segment_ids, _ = default_segments(input_ids, encoder.cfg.pad_id)
  return pool(out.hidden_states[layer], segment_ids, pooling)


KINDS = ("masked_lm", "sequence_classification", "token_classification", "question_answering",
         "multiple_choice")


def build(kind: str, cfg: EncoderConfig, *, rngs: nnx.Rngs, num_labels: int | None = None,
          generator: EncoderConfig | None = None) -> nnx.Module:
  """The model of `kind` (HF head names, see `polyglot/convert/hf.py`); a masked LM with a
  `generator` config is an RTD pretrainer (`rtd.ReplacedTokenDetector`)."""
  if kind == "masked_lm" and generator is not None:
    from polyglot.models import rtd  # pylint: disable=g-import-not-at-top
    return rtd.ReplacedTokenDetector(cfg, generator, rngs=rngs)
  if kind == "masked_lm":
    return MaskedLM(cfg, rngs=rngs)
  if kind == "question_answering":
    return QuestionAnswering(cfg, rngs=rngs)
  if kind == "multiple_choice":
    return MultipleChoice(cfg, rngs=rngs)
  if kind in ("sequence_classification", "token_classification"):
    if not num_labels or num_labels < 1:
      raise ConfigError(f"num_labels={num_labels!r} is invalid for {kind}: pass the label count")
    cls = SequenceClassifier if kind == "sequence_classification" else TokenClassifier
    return cls(cfg, num_labels, rngs=rngs)
  raise ConfigError(f"unknown model kind {kind!r}; known: {KINDS}")
