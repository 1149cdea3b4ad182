"""Mixture-of-Experts feed-forward: route, dispatch, experts, combine.

Shapes: b=batch, l=length, d=embed, f=mlp, e=experts, k=choices per token
(top_k), n=tokens (b * l), g=routing groups, t=tokens per group (n = g * t),
c=capacity (slots per expert and group), s=assignments (n * k).

Two dispatch paths (`MoEConfig.dispatch`), equal whenever no token overflows:
- "capacity": GShard/Switch one-hot dispatch and combine tensors [g, t, e, c];
  an expert takes at most c assignments per group, the rest are dropped. The
  dispatched tensor [e, g, c, d] is constrained to `("expert", "batch", ...)`,
  so with experts on the `expert` mesh axis XLA inserts the all-to-alls.
- "dropless": assignments sorted by expert and two grouped matmuls
  (`jax.lax.ragged_dot`); nothing is dropped. Its sort is global, so expert
  weights are gathered rather than tokens exchanged: use it on one host or
  with few experts; use "capacity" for expert parallelism.

A dropped assignment contributes zero (GShard does not renormalise the gate
of the surviving choice), so a token dropped by all its choices leaves the
MoE as zero and passes through the block's residual connection unchanged.
Padding tokens (`token_mask` False) take no capacity slot, output zero and
count in no loss or statistic.

The aux dict (summed over MoE layers by the Encoder, so every value is a
loss or a count):
- `load_balance_loss`: weight * E * sum_i f_i P_i (Switch, eq. 4), already
  weighted, to add to the training loss; equals the weight when first choices
  are spread evenly over the experts (not its minimum: see `load_balance_loss`).
- `router_z_loss`: weight * mean(logsumexp(logits)^2) (ST-MoE, eq. 5), already
  weighted, to add to the training loss.
- `moe_assignments`: the routed (token, expert) pairs, top_k per real token.
- `moe_dropped`: those of them dropped by capacity (0 when dropless).
- `moe_expert_assignments` [e]: pairs routed to each expert, before capacity.
`router_metrics` turns the counts into `dropped_fraction` and `expert_load`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from polyglot import sharding
from polyglot.models import layers
from polyglot.models.config import MoEConfig

GROUP_AXES = ("batch", None, "embed")                 # [g, t, d]
DISPATCHED_AXES = ("expert", "batch", None, "embed")  # [e, g, c, d]
HIDDEN_AXES = ("expert", "batch", None, "mlp")        # [e, g, c, f]


def num_groups(num_tokens: int, group_size: int) -> int:
  """The fewest groups of at most `group_size` tokens that split `num_tokens` evenly."""
  g = max(1, -(-num_tokens // group_size))
  while num_tokens % g:
    g += 1
  return g


def expert_capacity(tokens_per_group: int, num_experts: int, top_k: int, factor: float,
                    min_capacity: int) -> int:
  """Slots per expert and group: top_k * factor * t / e (GShard, section 2.2; Switch, eq. 3).

  Never more than t: an expert can receive each token of a group at most once.
  """
  c = max(min_capacity, math.ceil(top_k * factor * tokens_per_group / num_experts))
  return min(c, tokens_per_group)


def top_k(probs: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k` over experts as k argmaxes: [g, t, e] -> ([g, t, k] probs, [g, t, k] ids).

  XLA's SPMD partitioner gathers every token to every device for top_k (measured,
  jax 0.10.2); argmax stays sharded over the groups. Ties go to the lower id, as in top_k.
  """
  e = probs.shape[-1]
  remaining, ids = probs, []
  for _ in range(k):
    ids.append(jnp.argmax(remaining, axis=-1))                           # [g, t]
    remaining = jnp.where(jax.nn.one_hot(ids[-1], e, dtype=bool), -jnp.inf, remaining)
  experts = jnp.stack(ids, axis=-1)                                      # [g, t, k]
  return jnp.take_along_axis(probs, experts, axis=-1), experts


class Routing(NamedTuple):
  logits: jax.Array   # [g, t, e] float32
  probs: jax.Array    # [g, t, e] float32 softmax
  experts: jax.Array  # [g, t, k] int32, best first
  gates: jax.Array    # [g, t, k] float32; zero on padding


def load_balance_loss(routing: Routing, valid: jax.Array, weight: float) -> jax.Array:
  """weight * E * sum_i f_i P_i (Switch Transformer, Fedus et al., 2021, eq. 4).

  f_i: fraction of real tokens whose first choice is expert i; P_i: their mean
  router probability for expert i. When the first choices are spread evenly
  (every f_i = 1/E) the loss is exactly `weight`, whatever the probabilities
  (sum_i P_i = 1); tests/test_moe.py checks this for near-uniform routing and
  checks one skewed routing scoring above it. It is not the minimum: uneven
  routing can score below `weight` (E=2, probabilities (.55, .45) twice and
  (.1, .9) once: f = (2/3, 1/3), P = (.4, .6), loss = 14/15 * weight).
  """
  e = routing.probs.shape[-1]
  w = valid / jnp.maximum(valid.sum(), 1.0)                              # [g, t]
  f = jnp.einsum("gt,gte->e", w, jax.nn.one_hot(routing.experts[..., 0], e))
  p = jnp.einsum("gt,gte->e", w, routing.probs)
  return weight * e * jnp.sum(f * p)


def router_z_loss(routing: Routing, valid: jax.Array, weight: float) -> jax.Array:
  """weight * mean over real tokens of logsumexp(logits)^2 (ST-MoE, Zoph et al., 2022, eq. 5).

  Penalises large router logits, which keeps the float32 softmax stable.
  """
  z = jax.nn.logsumexp(routing.logits, axis=-1)                          # [g, t]
  return weight * jnp.sum(valid * jnp.square(z)) / jnp.maximum(valid.sum(), 1.0)


def router_metrics(aux: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """`dropped_fraction` (scalar) and `expert_load` ([e], sums to 1) from the summed counts."""
  if "moe_assignments" not in aux:
    return {}
  total = jnp.maximum(aux["moe_assignments"], 1.0)
  return {"dropped_fraction": aux["moe_dropped"] / total,
          "expert_load": aux["moe_expert_assignments"] / total}


def dispatch_masks(routing: Routing, valid: jax.Array,
                   capacity: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(dispatch [g, t, e, c] 0/1, combine [g, t, e, c] gates, kept [g, t, k] bool).

  First choices of all tokens take slots before any second choice (GShard,
  Lepikhin et al., 2020, algorithm 1); within a choice, earlier tokens first.
  Unlike GShard, a second choice is always dispatched (no random second expert).
  """
  g, t, k = routing.experts.shape
  e = routing.probs.shape[-1]
  real = valid[..., None, None].astype(jnp.int32)                       # [g, t, 1, 1]
  chosen = jax.nn.one_hot(routing.experts, e, dtype=jnp.int32) * real   # [g, t, k, e]
  by_choice = chosen.transpose(0, 2, 1, 3).reshape(g, k * t, e)          # [g, k*t, e]
  position = jnp.cumsum(by_choice, axis=1).reshape(g, k, t, e).transpose(0, 2, 1, 3) - 1
  slot = jnp.sum(position * chosen, axis=-1)                             # [g, t, k]
  kept = (slot < capacity) & (chosen.sum(-1) > 0)                        # [g, t, k]
  # Index `capacity` is out of range: one_hot gives a zero row for dropped choices.
  slots = jax.nn.one_hot(jnp.where(kept, slot, capacity), capacity)      # [g, t, k, c]
  dispatch = jnp.einsum("gtke,gtkc->gtec", chosen.astype(jnp.float32), slots)
  combine = jnp.einsum("gtk,gtke,gtkc->gtec", routing.gates, chosen.astype(jnp.float32), slots)
  return dispatch, combine, kept


class Router(nnx.Module):
  """Softmax router in float32 with top-k choice: [g, t, d] -> Routing."""

  def __init__(self, d: int, e: int, *, top_k: int, jitter: float, init_std: float,
               rngs: nnx.Rngs):
    self.kernel = layers.param(rngs, layers.normal(init_std), (d, e), ("embed", None))
    self.top_k = top_k
    self.jitter = jitter

  def __call__(self, x: jax.Array, valid: jax.Array, rng: jax.Array | None) -> Routing:
    x = x.astype(jnp.float32)
    if rng is not None and self.jitter > 0:
      # Multiplicative input jitter, training only (Switch Transformer; ST-MoE, section 3.2).
      x = x * jax.random.uniform(rng, x.shape, jnp.float32, 1 - self.jitter, 1 + self.jitter)
    logits = jnp.einsum("gtd,de->gte", x, self.kernel[...])             # [g, t, e]
    probs = jax.nn.softmax(logits, axis=-1)
    gates, experts = top_k(probs, self.top_k)                            # [g, t, k] each
    if self.top_k > 1:
      # GShard renormalises the top-2 gates to sum to 1; Switch's top-1 gate stays p_i.
      gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    return Routing(logits, probs, experts, gates * valid[..., None])


class Experts(nnx.Module):
  """e independent GELU MLPs d -> f -> d, on capacity slots or on sorted assignments."""

  def __init__(self, d: int, f: int, e: int, *, dropout_rate: float, init_std: float,
               rngs: nnx.Rngs, dtype=jnp.float32):
    init = layers.normal(init_std)
    self.wi = layers.param(rngs, init, (e, d, f), ("expert", "embed", "mlp"))
    self.bi = layers.param(rngs, layers.zeros, (e, f), ("expert", "mlp"))
    self.wo = layers.param(rngs, init, (e, f, d), ("expert", "mlp", "embed"))
    self.bo = layers.param(rngs, layers.zeros, (e, d), ("expert", "embed"))
    self.rate = dropout_rate
    self.dtype = dtype

  def _w(self, v: nnx.Param) -> jax.Array:
    return v[...].astype(self.dtype)

  def slots(self, x: jax.Array, rng: jax.Array | None) -> jax.Array:
    """x: [e, g, c, d] -> [e, g, c, d]."""
    h = jnp.einsum("egcd,edf->egcf", x, self._w(self.wi)) + self._w(self.bi)[:, None, None, :]
    h = sharding.constrain(layers.dropout(layers.gelu(h), self.rate, rng), HIDDEN_AXES)
    y = jnp.einsum("egcf,efd->egcd", h, self._w(self.wo)) + self._w(self.bo)[:, None, None, :]
    return sharding.constrain(y, DISPATCHED_AXES)

  def ragged(self, x: jax.Array, experts: jax.Array, group_sizes: jax.Array,
             rng: jax.Array | None) -> jax.Array:
    """x: [s, d] sorted by expert, experts: [s], group_sizes: [e] -> [s, d]."""
    h = jax.lax.ragged_dot(x, self._w(self.wi), group_sizes)            # [s, f]
    h = layers.dropout(layers.gelu(h + self._w(self.bi)[experts]), self.rate, rng)
    y = jax.lax.ragged_dot(h, self._w(self.wo), group_sizes)            # [s, d]
    return y + self._w(self.bo)[experts]


class MoeFeedForward(nnx.Module):
  """Sparse feed-forward: [b, l, d] -> ([b, l, d], aux); see the module docstring."""

  def __init__(self, d: int, f: int, cfg: MoEConfig, *, init_std: float, rngs: nnx.Rngs,
               dtype=jnp.float32):
    self.router = Router(d, cfg.num_experts, top_k=cfg.top_k, jitter=cfg.router_jitter,
                         init_std=init_std, rngs=rngs)
    self.experts = Experts(d, f, cfg.num_experts, dropout_rate=cfg.expert_dropout,
                           init_std=init_std, rngs=rngs, dtype=dtype)
    self.cfg = cfg
    self.dtype = dtype

  def __call__(self, x: jax.Array, rng: jax.Array | None = None,
               token_mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: [b, l, d], token_mask: [b, l] (False on padding; None: all real).

    Training (router jitter, expert dropout, `capacity_factor_train`) iff `rng` is given.
    """
    b, l, d = x.shape
    g = num_groups(b * l, self.cfg.group_size)
    real = jnp.ones((b, l), bool) if token_mask is None else token_mask
    valid = real.reshape(g, -1).astype(jnp.float32)                     # [g, t]
    xg = sharding.constrain(x.reshape(g, -1, d).astype(self.dtype), GROUP_AXES)  # [g, t, d]
    r_router, r_experts = layers.split_rng(rng, 2)
    routing = self.router(xg, valid, r_router)
    if self.cfg.dispatch == "capacity":
      y, kept = self._capacity(xg, routing, valid, training=rng is not None, rng=r_experts)
    else:
      kept = jnp.broadcast_to(valid[..., None] > 0, routing.experts.shape)  # [g, t, k]
      y = self._dropless(xg, routing, r_experts)
    return y.reshape(b, l, d), self._aux(routing, valid, kept)

  def _capacity(self, xg: jax.Array, routing: Routing, valid: jax.Array, *, training: bool,
                rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """GShard einsum dispatch: [g, t, d] -> ([g, t, d], kept [g, t, k])."""
    cfg = self.cfg
    factor = cfg.capacity_factor_train if training else cfg.capacity_factor_eval
    capacity = expert_capacity(xg.shape[1], cfg.num_experts, cfg.top_k, factor,
                               cfg.min_capacity)
    dispatch, combine, kept = dispatch_masks(routing, valid, capacity)
    x = jnp.einsum("gtd,gtec->egcd", xg, dispatch.astype(self.dtype))   # [e, g, c, d]
    y = self.experts.slots(sharding.constrain(x, DISPATCHED_AXES), rng)
    y = jnp.einsum("egcd,gtec->gtd", y, combine.astype(self.dtype))     # [g, t, d]
    return sharding.constrain(y, GROUP_AXES), kept

  def _dropless(self, xg: jax.Array, routing: Routing, rng: jax.Array | None) -> jax.Array:
    """Sorted ragged matmuls: [g, t, d] -> [g, t, d]."""
    g, t, d = xg.shape
    k = self.cfg.top_k
    experts = routing.experts.reshape(-1)                                # [s], token-major
    order = jnp.argsort(experts, stable=True)                            # [s]
    group_sizes = jnp.bincount(experts, length=self.cfg.num_experts).astype(jnp.int32)
    y_sorted = self.experts.ragged(xg.reshape(g * t, d)[order // k], experts[order],
                                   group_sizes, rng)                     # [s, d]
    y = jnp.zeros_like(y_sorted).at[order].set(y_sorted).reshape(g, t, k, d)
    return jnp.einsum("gtk,gtkd->gtd", routing.gates.astype(self.dtype), y)

  def _aux(self, routing: Routing, valid: jax.Array, kept: jax.Array) -> dict[str, jax.Array]:
    cfg = self.cfg
    chosen = jax.nn.one_hot(routing.experts, cfg.num_experts) * valid[..., None, None]
    assignments = cfg.top_k * valid.sum()
    return {
        "load_balance_loss": load_balance_loss(routing, valid, cfg.load_balance_loss_weight),
        "router_z_loss": router_z_loss(routing, valid, cfg.router_z_loss_weight),
        "moe_assignments": assignments,
        "moe_dropped": assignments - jnp.sum(kept * valid[..., None]),
        "moe_expert_assignments": jnp.sum(chosen, axis=(0, 1, 2)),       # [e]
    }
