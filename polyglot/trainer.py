"""The pure training and evaluation steps, the train state, and FLOPs accounting.

`train_step(state, batch, rng) -> (state, metrics)` holds no I/O; static
options (model graph, optimizer, objectives) are bound before `jax.jit`.
`batch` holds each objective's batch under its name (`{"mlm": {...}}`); the
step's gradient is the weighted sum of the objectives' (`polyglot.objectives`).
Parameters are plain nested dicts (`nnx.to_pure_dict`), merged into the NNX
model inside the step, so optax masks and Orbax see ordinary pytrees.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from polyglot import models, optimizer, sharding
from polyglot import objectives as objectives_lib
from polyglot.models.config import EncoderConfig
from polyglot.objectives import (Batch, Contrastive, LossConfig, MaskedLanguageModel, Metrics,
                                 Objective, ReplacedTokenDetection)

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
  objectives: Any = flax.struct.field(default_factory=dict)  # state of objectives that keep
                                                              # one (XLCo's queue), by name


def objective_rng(rng: jax.Array, i: int) -> jax.Array:
  """The dropout key of the i-th objective: `rng` itself for the first (MLM alone keeps
  the keys it always had), folded with i for the others."""
  return rng if i == 0 else jax.random.fold_in(rng, i)


def weighted_grads(objectives: Sequence[Objective], params, graphdef: nnx.GraphDef,
                   batch: dict[str, Batch], rng: jax.Array | None, states: dict[str, Any]
                   ) -> tuple[Any, jax.Array, Metrics, dict[str, Any]]:
  """(sum_k w_k grads_k, sum_k w_k loss_k, metrics, aux by objective) over `batch`, a dict
  of each objective's batch by name."""
  grads, loss, metrics, aux = None, None, {}, {}
  for i, o in enumerate(objectives):
    r = None if rng is None else objective_rng(rng, i)
    g, l, m, aux[o.name] = o.grads(params, graphdef, batch[o.name], r, states.get(o.name))
    if o.weight != 1:
      g, l = jax.tree.map(lambda x, w=o.weight: w * x, g), o.weight * l
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    loss = l if loss is None else loss + l
    metrics |= m
  return grads, loss, metrics, aux


def train_step(state: TrainState, batch: dict[str, Batch], rng: jax.Array, *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, objectives: Sequence[Objective]
               ) -> tuple[TrainState, Metrics]:
  """One optimizer update on a global batch (each objective's under its name); dropout
  keyed by `fold_in(rng, step)`."""
  dropout_rng = jax.random.fold_in(rng, state.step)
  grads, loss, metrics, aux = weighted_grads(objectives, state.params, graphdef, batch,
                                             dropout_rng, state.objectives)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  objective_states = {o.name: o.update_state(state.objectives[o.name], params, aux[o.name])
                      for o in objectives if o.name in state.objectives}
  metrics |= {
      "loss": loss,
      "grad_norm": optax.global_norm(grads),
      "update_norm": optax.global_norm(updates),
      "param_norm": optax.global_norm(params),
      "learning_rate": schedule(state.step),
      "tokens": sum(o.tokens(batch[o.name]) for o in objectives),
  }
  return TrainState(state.step + 1, params, opt_state, objective_states), metrics


def eval_step(params, batch: Batch, *, graphdef: nnx.GraphDef, objective: Objective) -> Metrics:
  """An objective's held-out metrics, without dropout."""
  return objective.evaluate(params, graphdef, batch)


def pretraining_model(cfg: EncoderConfig, objectives: Sequence[Objective], seed: int
                      ) -> nnx.Module:
  """The model the objectives train: a MaskedLM, with the RTD generator and detection head
  when an RTD objective is among them (its checkpoint meta's `generator_config`)."""
  return models.build("masked_lm", cfg, rngs=nnx.Rngs(seed),
                      generator=objectives_lib.generator_of(objectives))


def init_state(params, tx: optax.GradientTransformation,
               objectives: Sequence[Objective] = ()) -> TrainState:
  states = {o.name: s for o in objectives if (s := o.init_state(params))}
  return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), states)


@dataclasses.dataclass
class Setup:
  """A MaskedLM's graph, optimizer, and abstract train state with its shardings."""
  graphdef: nnx.GraphDef
  abstract: TrainState      # ShapeDtypeStructs carrying their shardings
  shardings: TrainState
  tx: optax.GradientTransformation
  schedule: optax.Schedule


def make_setup(cfg: EncoderConfig, mesh: jax.sharding.Mesh, *, optim: optimizer.OptimConfig,
               num_steps: int, seed: int = 0, rules: sharding.Rules = sharding.DEFAULT_RULES,
               objectives: Sequence[Objective] = ()) -> Setup:
  """Shapes and shardings of the train state, without allocating a parameter."""
  graphdef, abstract_state, state_sh = sharding.abstract_state(
      lambda: pretraining_model(cfg, objectives, seed), mesh, rules)
  params, param_sh = nnx.to_pure_dict(abstract_state), nnx.to_pure_dict(state_sh)
  tx, schedule = optimizer.make_optimizer(optim, num_steps)
  opt = jax.eval_shape(tx.init, params)
  opt_sh = sharding.optimizer_shardings(tx, opt, param_sh, mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  states = jax.eval_shape(lambda p: {o.name: s for o in objectives if (s := o.init_state(p))},
                          params)
  states_sh = {name: o.state_shardings(param_sh, mesh, rules)
               for o in objectives if (name := o.name) in states}
  shardings = TrainState(replicated, param_sh, opt_sh, states_sh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt, states),
                          shardings)
  return Setup(graphdef, abstract, shardings, tx, schedule)


def bind_train_step(graphdef, tx, schedule, objectives: Sequence[Objective]):
  return functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                           objectives=tuple(objectives))


def flops_per_token(cfg: EncoderConfig, length: int, decoder_share: float = 1.0) -> float:
  """Training FLOPs per token: 6 x (matmul params + tied decoder) + attention.

  Matmul params exclude the embedding tables (lookups cost no FLOPs) but the
  MLM decoder multiplies by the word embeddings, so d x v counts once per
  position it runs at: `decoder_share` of them (1 as in HF; k / l with
  `LossConfig.prediction_rate`). An MoE layer counts its router and `top_k`
  experts (active parameters; its dispatch is data movement, and dropless
  blocks past the last used one are skipped, so neither counts). Attention scores and values add 2 x 2 x l x d
  per layer forward, x3 for training (Kaplan et al., 2020, table 1; PaLM
  appendix B).
  """
  d, f, n_layers = cfg.hidden_size, cfg.mlp_dim, cfg.num_layers
  attn = 4 * d * d + 4 * d
  dense_mlp = 2 * d * f + f + d
  mlp = 0
  for i in range(n_layers):
    if cfg.moe is not None and cfg.moe.is_moe_layer(i):
      fe = cfg.moe.expert_mlp_dim or f
      mlp += cfg.moe.top_k * (2 * d * fe + fe + d) + d * cfg.moe.num_experts
    else:
      mlp += dense_mlp
  head = decoder_share * (d * d + d * cfg.vocab_size)
  matmul_params = n_layers * attn + mlp + head
  return 6.0 * matmul_params + 12.0 * n_layers * length * d


def rtd_flops_per_token(cfg: EncoderConfig, generator: EncoderConfig, length: int,
                        share: float) -> float:
  """Training FLOPs per token of replaced-token detection (objectives/rtd.py).

  The discriminator: its encoder and the detection head at every position
  (d x d + d, no d x v decoder). The generator: its encoder on the shared
  embeddings, their projection to its width (d x g), and its MLM head at the
  `share` of positions it predicts (g x d + d x v, tied to the shared table).
  All forward and backward (6 x); sampling costs no matmul.
  """
  d, g, v = cfg.hidden_size, generator.hidden_size, cfg.vocab_size
  discriminator = flops_per_token(cfg, length, 0.0) + 6.0 * (d * d + d)
  generator_head = share * (g * d + d * v)
  return (discriminator + flops_per_token(generator, length, 0.0)
          + 6.0 * (d * g + generator_head))


def decoder_share(loss_cfg: LossConfig, length: int) -> float:
  """Share of a row's positions the MLM head runs at (see `objectives.mlm.select_predictions`)."""
  if loss_cfg.prediction_rate is None:
    return 1.0
  return min(length, math.ceil(loss_cfg.prediction_rate * length)) / length


def objective_flops(cfg: EncoderConfig, o: Objective) -> float:
  """Training FLOPs of one step of objective `o` on its whole batch.

  A masked-LM objective (MLM, TLM) costs `flops_per_token` per row token. XLCo
  encodes both sides of each pair without the MLM head: queries forward and
  backward (6 x), keys forward only (2 x) from the momentum encoder, or forward
  and backward with in-batch negatives; the similarity matmuls are negligible.
  """
  tokens = o.data.batch_size * o.data.seq_len
  if isinstance(o, MaskedLanguageModel):
    return tokens * flops_per_token(cfg, o.data.seq_len,
                                    decoder_share(o.loss_cfg, o.data.seq_len))
  if isinstance(o, ReplacedTokenDetection):
    return tokens * rtd_flops_per_token(cfg, o.generator, o.data.seq_len,
                                        decoder_share(o.loss_cfg, o.data.seq_len))
  encoder = flops_per_token(cfg, o.data.seq_len, 0.0)  # 6 x encoder, no MLM head
  key_share = 1 / 3 if isinstance(o, Contrastive) and o.negatives == "queue" else 1.0
  return tokens * encoder * (1 + key_share)


def peak_flops(device: jax.Device) -> float | None:
  """Per-device peak bf16 FLOP/s, or None where unknown (CPU): MFU is then n/a."""
  kind = device.device_kind
  for name, flops in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if name.lower() in kind.lower():
      return flops
  return None
