"""Replaced-token detection (ELECTRA: Clark et al., 2020; XLM-E: Chi et al., ACL 2022).

Shapes: b=batch, l=length, k=predicted positions per row, v=vocab.

MRTD reads the pipeline's "mlm" rows of monolingual text, TRTD its "tlm" rows
of translation pairs (a pair is one sequence, as in TLM): `input_ids` masked
as XLM-R's MLM (TrainConfig.mask_rate, 80/10/10), `targets` the original
tokens, `loss_weights` 1 at the selected positions. One step:

1. The generator (`polyglot.models.rtd`) reads the masked row and predicts
   the selected tokens at the k positions `mlm.select_predictions` keeps:
   L_gen, the masked-LM cross-entropy of MLM.
2. At each selected position a token is sampled from the generator's softmax
   (temperature 1 as ELECTRA; `sample`) and replaces the original; every
   other position keeps the original token.
   The sampled ids are integers: no gradient passes the sampling.
3. The discriminator (the encoder) reads that row and its detection head
   predicts, at every non-padding position, whether the token differs from
   the original: label = sampled != original, so a sample that happens to be
   the original counts as original (as ELECTRA). L_disc is the mean sigmoid
   cross-entropy over the non-padding positions.

loss = L_gen + discriminator_weight x L_disc (lambda = 50, ELECTRA section 3.2;
XLM-E keeps it). Both models read one set of input embeddings, trained by both
losses; the discriminator's loss reaches the generator through them only.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from polyglot.errors import ConfigError
from polyglot.models import layers
from polyglot.models import rtd as rtd_model
from polyglot.models.config import EncoderConfig
from polyglot.objectives import mlm
from polyglot.objectives.base import (Batch, DataSpec, Metrics, Objective,
                                      require_parallel_mixture)

# The sampling key of held-out evaluations, which run without dropout keys: each evaluation
# corrupts the same rows the same way.
EVAL_SEED = 0


def corrupt(original: jax.Array, sampled: jax.Array, weights: jax.Array,
            predict_at: jax.Array | None) -> jax.Array:
  """The discriminator's input: `original` [b, l] with `sampled` [b, k] written where
  `weights` [b, k] > 0; `predict_at` [b, k] places the k columns (None: k = l, in order)."""
  if predict_at is None:
    return jnp.where(weights > 0, sampled, original)
  current = jnp.take_along_axis(original, predict_at, axis=1)           # [b, k]
  rows = jnp.arange(original.shape[0])[:, None]
  return jnp.asarray(original).at[rows, predict_at].set(jnp.where(weights > 0, sampled, current))


def sample(key: jax.Array, logits: jax.Array) -> jax.Array:
  """A token per position from softmax(`logits`) [..., v] -> int32 [...], by inverting the CDF
  with one uniform per position: the distribution of `jax.random.categorical`, whose Gumbel
  noise draws v random numbers per position (4x slower on CPU at v = 8,000 and at 250,002;
  docs/cross_lingual.md)."""
  cdf = jnp.cumsum(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
  u = jax.random.uniform(key, logits.shape[:-1] + (1,), minval=jnp.finfo(jnp.float32).tiny)
  index = (cdf < u * cdf[..., -1:]).sum(-1)  # the first token whose CDF reaches u
  return jnp.minimum(index, logits.shape[-1] - 1).astype(jnp.int32)


def detection_loss(logits: jax.Array, labels: jax.Array, real: jax.Array,
                   total: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum of sigmoid cross-entropies over `total`, correct predictions over `total`): logits,
  labels (0/1) and real (1 on non-padding) [b, l]."""
  ce = optax.sigmoid_binary_cross_entropy(logits, labels) * real
  correct = ((logits > 0) == (labels > 0)) * real
  return ce.sum() / total, correct.sum() / total


def loss_fn(params, batch: Batch, rng: jax.Array | None, *, graphdef: nnx.GraphDef,
            totals: dict[str, jax.Array], discriminator_weight: float,
            loss_cfg: mlm.LossConfig) -> tuple[jax.Array, Metrics]:
  """L_gen + lambda x L_disc (+ the discriminator's MoE losses) of one (micro)batch, each
  normalised by the whole batch's `totals`: "masked" (selected tokens), "real" (tokens)."""
  model = nnx.merge(graphdef, params)
  r_embed, r_gen, r_disc = layers.split_rng(rng, 3)
  r_sample = jax.random.key(EVAL_SEED) if rng is None else jax.random.fold_in(rng, 3)
  segment_ids, positions = batch["segment_ids"], batch["positions"]
  embeddings = model.encoder.embeddings
  word = embeddings.word[...]                                                  # [v, d]
  embedded = embeddings(batch["input_ids"], segment_ids, positions, None, r_embed)
  predict_at = batch.get("predict_at")
  gen_logits, _ = model.generator(embedded, segment_ids, word, dropout_rng=r_gen,
                                  predict_at=predict_at)                     # [b, k, v]
  weights = batch["loss_weights"].astype(jnp.float32)                          # [b, k]
  gen_loss, gen_metrics = mlm.mlm_loss(gen_logits, batch["targets"], weights, totals["masked"],
                                       loss_cfg.z_loss_weight)
  sampled = sample(r_sample, jax.lax.stop_gradient(gen_logits))                 # [b, k]
  original = batch["original"]                                                 # [b, l]
  corrupted = corrupt(original, sampled, weights, predict_at)
  real = (segment_ids > 0).astype(jnp.float32)
  labels = (corrupted != original).astype(jnp.float32) * real
  out = model.encoder(corrupted, segment_ids, positions, dropout_rng=r_disc)
  disc_loss, disc_accuracy = detection_loss(model.rtd_head(out.last_hidden), labels, real,
                                            totals["real"])
  loss = gen_loss + discriminator_weight * disc_loss
  metrics = {"generator_loss": gen_metrics["mlm_loss"],
             "generator_accuracy": gen_metrics["mlm_accuracy"],
             "detection_loss": disc_loss, "detection_accuracy": disc_accuracy,
             "replaced": labels.sum() / totals["real"]}
  if "z_loss" in gen_metrics:
    metrics["generator_z_loss"] = gen_metrics["z_loss"]
    loss = loss + gen_metrics["z_loss"]
  share = real.sum() / totals["real"]  # MoE losses are per-token means
  for name, value in out.aux.items():
    if name.endswith("_loss"):
      value = share * value
      loss = loss + value
    metrics[name] = value
  return loss, metrics | {"loss": loss}


@dataclasses.dataclass(frozen=True)
class ReplacedTokenDetection(Objective):
  """MRTD or TRTD on "mlm" or "tlm" rows (see the module docstring)."""
  loss_cfg: mlm.LossConfig = mlm.LossConfig()
  discriminator_weight: float = 50.0
  generator: EncoderConfig | None = None  # models/rtd.py generator_config

  def _prepared(self, graphdef, batch: Batch):
    """(the batch at the selected positions with the `original` rows, the loss of one
    (micro)batch, the selected weight left out)."""
    selected, left_out = mlm.select_predictions(batch, self.loss_cfg.prediction_rate)
    selected = dict(selected, original=batch["targets"])
    totals = {"masked": jnp.maximum(selected["loss_weights"].astype(jnp.float32).sum(), 1.0),
              "real": jnp.maximum((batch["segment_ids"] > 0).sum().astype(jnp.float32), 1.0)}
    loss = functools.partial(loss_fn, graphdef=graphdef, totals=totals, loss_cfg=self.loss_cfg,
                             discriminator_weight=self.discriminator_weight)
    return selected, loss, left_out

  def grads(self, params, graphdef, batch, rng, state):
    selected, loss, left_out = self._prepared(graphdef, batch)
    grads, metrics = mlm.accumulate_grads(loss, params, selected, rng, self.loss_cfg.microbatches)
    metrics |= mlm.router_summary(metrics) | {"unpredicted": left_out}
    return grads, metrics["loss"], self._named(metrics), None

  def evaluate(self, params, graphdef, batch):
    selected, loss, _ = self._prepared(graphdef, batch)
    _, metrics = loss(params, selected, None)
    return self._named({k: v for k, v in metrics.items() if not k.startswith("moe")})

  def _named(self, metrics: Metrics) -> Metrics:
    return {f"{self.name}_{k}": v for k, v in metrics.items()}

  def describe(self):
    return super().describe() | {
        "loss": dataclasses.asdict(self.loss_cfg),
        "discriminator_weight": self.discriminator_weight,
        "generator": {k: getattr(self.generator, k)
                      for k in ("hidden_size", "num_layers", "num_heads", "mlp_dim")}}


@dataclasses.dataclass(frozen=True)
class MRTD:
  """gin `MRTD`: multilingual replaced-token detection on monolingual text (XLM-E).

  `mixture`, `batch_size` and `seq_len` default to TrainConfig's; masking is
  TrainConfig.mask_rate, the generator's loss options LossConfig's. The
  generator is `generator_size` x the encoder's width (heads, hidden and MLP; at
  least one head) at `generator_layers` depth (default: the encoder's), as
  ELECTRA-Base's 1/3 (its table 6; 1/4 for Small and Large). MRTD and TRTD in
  one run share the generator.
  """
  weight: float = 1.0
  mixture: str | None = None
  batch_size: int | None = None
  seq_len: int | None = None
  discriminator_weight: float = 50.0     # lambda: ELECTRA's (section 3.2), as XLM-E
  generator_size: float = 1 / 3
  generator_layers: int | None = None
  features = "mlm"
  name = "mrtd"

  def build(self, defaults: DataSpec, loss_cfg: mlm.LossConfig, model_cfg) -> Objective:
    c = type(self).__name__
    if not self.discriminator_weight > 0:
      raise ConfigError(f"{c}.discriminator_weight={self.discriminator_weight} is invalid: use "
                        "> 0 (ELECTRA's 50)")
    if not 0 < self.generator_size <= 1:
      raise ConfigError(f"{c}.generator_size={self.generator_size} is invalid: use a share of "
                        "the encoder's width in (0, 1], e.g. 1/3 as ELECTRA-Base")
    if self.generator_layers is not None and not self.generator_layers >= 1:
      raise ConfigError(f"{c}.generator_layers={self.generator_layers} is invalid: use >= 1, "
                        "or None for the encoder's depth")
    data = DataSpec(self.mixture or defaults.mixture, self.features,
                    self.batch_size or defaults.batch_size, self.seq_len or defaults.seq_len)
    generator = rtd_model.generator_config(model_cfg, self.generator_size, self.generator_layers)
    return ReplacedTokenDetection(self.name, self.weight, data, loss_cfg,
                                  self.discriminator_weight, generator)


@dataclasses.dataclass(frozen=True)
class TRTD(MRTD):
  """gin `TRTD`: translation replaced-token detection on translation pairs (XLM-E);
  `mixture` is a parallel mixture (tasks/parallel.py), its rows TLM's."""
  features = "tlm"
  name = "trtd"

  def build(self, defaults: DataSpec, loss_cfg: mlm.LossConfig, model_cfg) -> Objective:
    require_parallel_mixture("TRTD", self.mixture)
    return super().build(defaults, loss_cfg, model_cfg)
