"""Masked language modelling (BERT; XLM-R's only objective), and the loss TLM shares.

Shapes: b=batch, l=length, v=vocab, a=microbatches, k=predicted positions per row.

The batch is the pipeline's "mlm" (or "tlm") layout: `input_ids, targets,
loss_weights, segment_ids, positions`, int32 [b, l]. The loss is the mean
cross-entropy over the selected tokens (`loss_weights`), the decoder runs at
the k = ceil(prediction_rate x l) positions per row with the largest weights
(`select_predictions`), and gradients accumulate over `LossConfig.microbatches`
with a scan.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from polyglot.errors import ConfigError
from polyglot.models import moe
from polyglot.objectives.base import Batch, DataSpec, Metrics, Objective


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Masked-LM loss options (MLM and TLM) and the step's gradient accumulation; MoE
  auxiliary losses arrive already weighted (see MoEConfig)."""
  z_loss_weight: float = 0.0     # PaLM-style log(Z)^2 on the MLM logits; 0 disables
  microbatches: int = 1          # gradient accumulation: the batch splits into this many
  # Share of each row's positions the MLM decoder runs on: the k = ceil(rate x l)
  # with the largest loss weights. None runs it everywhere, as HF does. With 15%
  # masking at l >= 128, 0.3 leaves no selected token out in practice (> 4.9
  # sigma); `mlm_unpredicted` counts any that are.
  prediction_rate: float | None = 0.3

  def __post_init__(self):
    if self.z_loss_weight < 0:
      raise ConfigError(f"LossConfig.z_loss_weight={self.z_loss_weight} is invalid: use >= 0")
    if self.prediction_rate is not None and not 0 < self.prediction_rate <= 1:
      raise ConfigError(f"LossConfig.prediction_rate={self.prediction_rate} is invalid: use a "
                        "rate in (0, 1] above the masking rate, or None for every position")
    if self.microbatches < 1:
      raise ConfigError(f"LossConfig.microbatches={self.microbatches} is invalid: use >= 1")


def token_scores(logits: jax.Array, targets: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """logits [b, l, v], targets [b, l] -> (cross-entropy, correct (0/1), log Z), [b, l] each."""
  log_z = jax.nn.logsumexp(logits, axis=-1)                                   # [b, l]
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]  # [b, l]
  # Correct when no logit exceeds the target's (a tie counts): a compare-and-any pass that
  # XLA:CPU vectorises, where argmax's (value, index) reduction cost 2.5% of `small`'s step.
  beaten = (logits > jax.lax.stop_gradient(target_logit)[..., None]).any(-1)  # [b, l]
  return log_z - target_logit, jnp.logical_not(beaten).astype(jnp.float32), log_z


def mlm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
             total_weight: jax.Array, z_loss_weight: float) -> tuple[jax.Array, Metrics]:
  """Sum of weighted cross-entropies over `total_weight`: logits [b, l, v], others [b, l]."""
  ce, correct, log_z = token_scores(logits, targets)
  ce, correct = ce * weights, correct * weights
  loss = ce.sum() / total_weight
  metrics = {"mlm_loss": loss, "mlm_accuracy": correct.sum() / total_weight}
  if z_loss_weight:
    z_loss = z_loss_weight * (jnp.square(log_z) * weights).sum() / total_weight
    metrics["z_loss"] = z_loss
    loss = loss + z_loss
  return loss, metrics


def select_predictions(batch: Batch, rate: float | None) -> tuple[Batch, jax.Array]:
  """Keeps the k = ceil(rate x l) positions per row with the largest loss weights.

  Returns the batch with `predict_at` [b, k] and `targets`/`loss_weights`
  gathered there ([b, k]), and the loss weight left out (0 unless a row has
  more than k predicted tokens). Ties go to the earlier position.
  """
  length = batch["loss_weights"].shape[1]
  if rate is None or math.ceil(rate * length) >= length:
    return batch, jnp.zeros((), jnp.float32)
  weights = batch["loss_weights"].astype(jnp.float32)                   # [b, l]
  _, predict_at = jax.lax.top_k(weights, math.ceil(rate * length))      # [b, k]
  gather = lambda x: jnp.take_along_axis(x, predict_at, axis=1)
  selected = dict(batch, predict_at=predict_at, targets=gather(batch["targets"]),
                  loss_weights=gather(batch["loss_weights"]))
  left_out = weights.sum() - selected["loss_weights"].astype(jnp.float32).sum()
  return selected, left_out


def loss_fn(params, *, graphdef: nnx.GraphDef, batch: Batch, total_weight: jax.Array,
            dropout_rng: jax.Array | None, loss_cfg: LossConfig) -> tuple[jax.Array, Metrics]:
  """Loss of one (micro)batch, normalised by the whole batch's `total_weight`."""
  model = nnx.merge(graphdef, params)
  logits, aux = model(batch["input_ids"], batch["segment_ids"], batch["positions"],
                      dropout_rng=dropout_rng, predict_at=batch.get("predict_at"))
  weights = batch["loss_weights"].astype(jnp.float32)
  loss, metrics = mlm_loss(logits, batch["targets"], weights, total_weight,
                           loss_cfg.z_loss_weight)
  # MoE losses are per-token means; a microbatch contributes its share of the tokens.
  share = weights.sum() / total_weight
  for name, value in aux.items():
    if name.endswith("_loss"):
      value = share * value
      loss = loss + value
    metrics[name] = value  # router counts add up over microbatches as they are
  return loss, metrics


def router_summary(metrics: Metrics) -> Metrics:
  """Replaces the MoE router counts with the fraction dropped and the expert load spread."""
  counts = {k: metrics.pop(k) for k in list(metrics) if k.startswith("moe_")}
  if not counts:
    return {}
  stats = moe.router_metrics(counts)
  load = stats["expert_load"]  # [e], sums to 1
  return {"moe_dropped_fraction": stats["dropped_fraction"],
          "moe_expert_load_max": load.max(), "moe_expert_load_min": load.min()}


def _split_microbatches(batch: Batch, n: int) -> Batch:
  """[b, ...] -> [a, b / a, ...]."""
  size = batch["input_ids"].shape[0]
  if size % n:
    raise ConfigError(f"LossConfig.microbatches={n} does not divide the batch size {size}; "
                      "choose a divisor")
  return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)


def grads_and_metrics(params, graphdef, batch: Batch, rng: jax.Array | None,
                      loss_cfg: LossConfig) -> tuple[Any, Metrics]:
  """Gradients of the batch loss, accumulated over `loss_cfg.microbatches` with a scan."""
  batch, left_out = select_predictions(batch, loss_cfg.prediction_rate)
  total_weight = jnp.maximum(batch["loss_weights"].astype(jnp.float32).sum(), 1.0)
  loss = functools.partial(loss_fn, graphdef=graphdef, total_weight=total_weight,
                           loss_cfg=loss_cfg)
  grads, metrics = accumulate_grads(
      lambda p, b, r: loss(p, batch=b, dropout_rng=r), params, batch, rng, loss_cfg.microbatches)
  return grads, metrics | {"mlm_unpredicted": left_out}


def accumulate_grads(loss: Callable[[Any, Batch, jax.Array | None], tuple[jax.Array, Metrics]],
                     params, batch: Batch, rng: jax.Array | None, n: int) -> tuple[Any, Metrics]:
  """(grads, metrics) of `loss(params, microbatch, rng)`, summed over `n` microbatches with a
  scan (the i-th with dropout key fold_in(rng, i)); `loss` normalises by the whole batch."""
  grad_fn = jax.grad(loss, has_aux=True)
  if n == 1:
    return grad_fn(params, batch, rng)
  micro = _split_microbatches(batch, n)  # [a, b / a, l]

  def body(acc, xs):
    mb, i = xs
    r = None if rng is None else jax.random.fold_in(rng, i)
    out = grad_fn(params, mb, r)
    return jax.tree.map(jnp.add, acc, out), None

  shapes = jax.eval_shape(lambda p, b: grad_fn(p, b, rng), params,
                          jax.tree.map(lambda x: x[0], micro))
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  (grads, metrics), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(n)))
  return grads, metrics


def total_loss(metrics: Metrics) -> jax.Array:
  """The masked-LM loss and every extra loss (z-loss, MoE auxiliary losses) in `metrics`."""
  return metrics["mlm_loss"] + sum(v for k, v in metrics.items()
                                   if k.endswith("_loss") and k != "mlm_loss")


def eval_metrics(params, batch: Batch, *, graphdef: nnx.GraphDef,
                 loss_cfg: LossConfig) -> Metrics:
  """MLM loss and accuracy without dropout, for held-out batches."""
  batch, _ = select_predictions(batch, loss_cfg.prediction_rate)
  total_weight = jnp.maximum(batch["loss_weights"].astype(jnp.float32).sum(), 1.0)
  _, metrics = loss_fn(params, graphdef=graphdef, batch=batch, total_weight=total_weight,
                       dropout_rng=None, loss_cfg=loss_cfg)
  return {k: v for k, v in metrics.items() if k.startswith("mlm_")}


def language_sums(params, batch: Batch, *, graphdef: nnx.GraphDef, loss_cfg: LossConfig,
                  num_languages: int) -> Metrics:
  """Held-out sums per language, without dropout: `batch` holds `languages` int32 [b] (the
  row's language, `polyglot.data.heldout`) -> {"loss", "correct", "tokens"} float32
  [num_languages]: summed cross-entropy, correct predictions and predicted tokens."""
  batch, _ = select_predictions(batch, loss_cfg.prediction_rate)
  model = nnx.merge(graphdef, params)
  logits, _ = model(batch["input_ids"], batch["segment_ids"], batch["positions"],
                    predict_at=batch.get("predict_at"))
  weights = batch["loss_weights"].astype(jnp.float32)                     # [b, k]
  ce, correct, _ = token_scores(logits, batch["targets"])
  per_row = {"loss": (ce * weights).sum(-1), "correct": (correct * weights).sum(-1),
             "tokens": weights.sum(-1)}                                   # [b] each
  return {k: jax.ops.segment_sum(v, batch["languages"], num_languages) for k, v in per_row.items()}


def renamed(metrics: Metrics, prefix: str) -> Metrics:
  """`mlm_*` metrics as `<prefix>_*`, others as `<prefix>_<name>` (identity for "mlm")."""
  if prefix == "mlm":
    return metrics
  return {(f"{prefix}_{k[4:]}" if k.startswith("mlm_") else f"{prefix}_{k}"): v
          for k, v in metrics.items()}


@dataclasses.dataclass(frozen=True)
class MaskedLanguageModel(Objective):
  """Masked-LM cross-entropy on a packed, masked batch: MLM on "mlm" rows, TLM on "tlm"."""
  loss_cfg: LossConfig = LossConfig()

  def grads(self, params, graphdef, batch, rng, state):
    grads, metrics = grads_and_metrics(params, graphdef, batch, rng, self.loss_cfg)
    metrics |= router_summary(metrics)
    return grads, total_loss(metrics), renamed(metrics, self.name), None

  def evaluate(self, params, graphdef, batch):
    return renamed(eval_metrics(params, batch, graphdef=graphdef, loss_cfg=self.loss_cfg),
                   self.name)

  def describe(self):
    return super().describe() | {"loss": dataclasses.asdict(self.loss_cfg)}


@dataclasses.dataclass(frozen=True)
class MLM:
  """gin `MLM`: masked language modelling on monolingual text (XLM-R).

  `mixture`, `batch_size` and `seq_len` default to TrainConfig's; masking is
  TrainConfig.mask_rate, the loss options LossConfig's.
  """
  weight: float = 1.0
  mixture: str | None = None
  batch_size: int | None = None
  seq_len: int | None = None
  features = "mlm"
  name = "mlm"

  def build(self, defaults: DataSpec, loss_cfg: LossConfig, model_cfg) -> Objective:
    del model_cfg
    data = DataSpec(self.mixture or defaults.mixture, self.features,
                    self.batch_size or defaults.batch_size, self.seq_len or defaults.seq_len)
    return MaskedLanguageModel(self.name, self.weight, data, loss_cfg)
