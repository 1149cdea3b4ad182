"""The pure training and evaluation steps, the train state, and FLOPs accounting.

Shapes: b=batch, l=length, v=vocab, a=microbatches, k=predicted positions per row.

`train_step(state, batch, rng) -> (state, metrics)` holds no I/O; static
options (model graph, optimizer, loss weights) are bound before `jax.jit`.
Parameters are plain nested dicts (`nnx.to_pure_dict`), merged into the NNX
model inside the step, so optax masks and Orbax see ordinary pytrees.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from polyglot import optimizer, sharding
from polyglot.errors import ConfigError
from polyglot.models import moe
from polyglot.models.config import EncoderConfig
from polyglot.models.heads import MaskedLM

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]

# Dense bf16 peak FLOP/s per device, from the vendors' data sheets.
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "A100": 312e12, "H100": 989e12, "H200": 989e12,
}


@flax.struct.dataclass
class TrainState:
  step: jax.Array   # int32 scalar: updates done
  params: Any       # nested dict of float32 arrays
  opt_state: Any    # optax state, mirroring params


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """MLM loss options; MoE auxiliary losses arrive already weighted (see MoEConfig)."""
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


def mlm_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
             total_weight: jax.Array, z_loss_weight: float) -> tuple[jax.Array, Metrics]:
  """Sum of weighted cross-entropies over `total_weight`: logits [b, l, v], others [b, l]."""
  log_z = jax.nn.logsumexp(logits, axis=-1)                                   # [b, l]
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]  # [b, l]
  ce = (log_z - target_logit) * weights
  correct = (jnp.argmax(logits, -1) == targets) * weights
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
  grads, metrics = _accumulate_grads(params, graphdef, batch, rng, loss_cfg)
  return grads, metrics | {"mlm_unpredicted": left_out}


def _accumulate_grads(params, graphdef, batch: Batch, rng: jax.Array | None,
                      loss_cfg: LossConfig) -> tuple[Any, Metrics]:
  total_weight = jnp.maximum(batch["loss_weights"].astype(jnp.float32).sum(), 1.0)
  grad_fn = jax.grad(functools.partial(loss_fn, graphdef=graphdef, loss_cfg=loss_cfg),
                     has_aux=True)
  n = loss_cfg.microbatches
  if n == 1:
    return grad_fn(params, batch=batch, total_weight=total_weight, dropout_rng=rng)
  micro = _split_microbatches(batch, n)  # [a, b / a, l]

  def body(acc, xs):
    mb, i = xs
    r = None if rng is None else jax.random.fold_in(rng, i)
    out = grad_fn(params, batch=mb, total_weight=total_weight, dropout_rng=r)
    return jax.tree.map(jnp.add, acc, out), None

  shapes = jax.eval_shape(lambda p, b: grad_fn(p, batch=b, total_weight=total_weight,
                                               dropout_rng=rng),
                          params, jax.tree.map(lambda x: x[0], micro))
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  (grads, metrics), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(n)))
  return grads, metrics


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               loss_cfg: LossConfig) -> tuple[TrainState, Metrics]:
  """One optimizer update on a global batch; dropout keyed by `fold_in(rng, step)`."""
  dropout_rng = jax.random.fold_in(rng, state.step)
  grads, metrics = grads_and_metrics(state.params, graphdef, batch, dropout_rng, loss_cfg)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics |= router_summary(metrics)
  metrics |= {
      "loss": metrics["mlm_loss"] + sum(v for k, v in metrics.items()
                                        if k.endswith("_loss") and k != "mlm_loss"),
      "grad_norm": optax.global_norm(grads),
      "update_norm": optax.global_norm(updates),
      "param_norm": optax.global_norm(params),
      "learning_rate": schedule(state.step),
      "tokens": (batch["segment_ids"] > 0).sum(),
  }
  return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(params, batch: Batch, *, graphdef: nnx.GraphDef,
              loss_cfg: LossConfig) -> Metrics:
  """MLM loss and accuracy without dropout, for held-out batches."""
  batch, _ = select_predictions(batch, loss_cfg.prediction_rate)
  total_weight = jnp.maximum(batch["loss_weights"].astype(jnp.float32).sum(), 1.0)
  _, metrics = loss_fn(params, graphdef=graphdef, batch=batch, total_weight=total_weight,
                       dropout_rng=None, loss_cfg=loss_cfg)
  return {k: v for k, v in metrics.items() if k.startswith("mlm_")}


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


@dataclasses.dataclass
class Setup:
  """A MaskedLM's graph, optimizer, and abstract train state with its shardings."""
  graphdef: nnx.GraphDef
  abstract: TrainState      # ShapeDtypeStructs carrying their shardings
  shardings: TrainState
  tx: optax.GradientTransformation
  schedule: optax.Schedule


def make_setup(cfg: EncoderConfig, mesh: jax.sharding.Mesh, *, optim: optimizer.OptimConfig,
               num_steps: int, seed: int = 0,
               rules: sharding.Rules = sharding.DEFAULT_RULES) -> Setup:
  """Shapes and shardings of the train state, without allocating a parameter."""
  graphdef, abstract_state, state_sh = sharding.abstract_state(
      lambda: MaskedLM(cfg, rngs=nnx.Rngs(seed)), mesh, rules)
  params, param_sh = nnx.to_pure_dict(abstract_state), nnx.to_pure_dict(state_sh)
  tx, schedule = optimizer.make_optimizer(optim, num_steps)
  opt = jax.eval_shape(tx.init, params)
  opt_sh = sharding.optimizer_shardings(tx, opt, param_sh, mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = TrainState(replicated, param_sh, opt_sh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt),
                          shardings)
  return Setup(graphdef, abstract, shardings, tx, schedule)


def bind_train_step(graphdef, tx, schedule, loss_cfg):
  return functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                           loss_cfg=loss_cfg)


def flops_per_token(cfg: EncoderConfig, length: int, decoder_share: float = 1.0) -> float:
  """Training FLOPs per token: 6 x (matmul params + tied decoder) + attention.

  Matmul params exclude the embedding tables (lookups cost no FLOPs) but the
  MLM decoder multiplies by the word embeddings, so d x v counts once per
  position it runs at: `decoder_share` of them (1 as in HF; k / l with
  `LossConfig.prediction_rate`). An MoE layer counts its router and `top_k`
  experts (active parameters). Attention scores and values add 2 x 2 x l x d
  per layer forward, x3 for training (Kaplan et al., 2020, table 1; PaLM
  appendix B).
  """
  d, f, n_layers = cfg.hidden_size, cfg.mlp_dim, cfg.num_layers
  attn = 4 * d * d + 4 * d
  dense_mlp = 2 * d * f + f + d
  mlp = 0
  for i in range(n_layers):
    if cfg.moe is not None and cfg.moe.is_moe_layer(i):
      mlp += cfg.moe.top_k * dense_mlp + d * cfg.moe.num_experts
    else:
      mlp += dense_mlp
  head = decoder_share * (d * d + d * cfg.vocab_size)
  matmul_params = n_layers * attn + mlp + head
  return 6.0 * matmul_params + 12.0 * n_layers * length * d


def decoder_share(loss_cfg: LossConfig, length: int) -> float:
  """Share of a row's positions the MLM head runs at (see `select_predictions`)."""
  if loss_cfg.prediction_rate is None:
    return 1.0
  return min(length, math.ceil(loss_cfg.prediction_rate * length)) / length


def peak_flops(device: jax.Device) -> float | None:
  """Per-device peak bf16 FLOP/s, or None where unknown (CPU): MFU is then n/a."""
  kind = device.device_kind
  for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if name.lower() in kind.lower():
      return flops
  return None
