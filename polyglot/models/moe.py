"""Mixture-of-Experts feed-forward: route, dispatch, experts, combine.

Shapes: b=batch, l=length, d=embed, f=mlp, e=experts, k=choices per token
(top_k), n=tokens (b * l), g=routing groups, t=tokens per group (n = g * t),
c=capacity (slots per expert and group), s=assignments (n * k), r=rows per block,
m=blocks of the dropless layout.

Two dispatch paths (`MoEConfig.dispatch`), equal whenever no token overflows:
- "capacity": GShard/Switch one-hot dispatch and combine tensors [g, t, e, c];
  an expert takes at most c assignments per group, the rest are dropped. The
  dispatched tensor [e, g, c, d] is constrained to `("expert", "batch", ...)`,
  so with experts on the `expert` mesh axis XLA inserts the all-to-alls.
- "dropless": nothing is dropped. Assignments are laid out by expert in blocks
  of r rows (`block_layout`, a counting sort: an expert's assignments fill
  whole blocks, the last one padded), and each block is one matmul with its
  expert's weights (`grouped_matmul`); blocks past the last used one are
  skipped, forward and backward. Under a mesh it runs per device
  (`jax.shard_map`): with experts on the `expert` axis, the tokens of that
  axis are all-gathered, each device runs its own experts on them and the
  outputs are reduce-scattered back (Megatron-Core's all-gather token
  dispatcher). Every buffer is sized for the worst case, all assignments to
  one device's experts, but only the used blocks cost FLOPs. The all-gather
  moves each token to every device of the axis, where an all-to-all would move
  its k assignments: XLA:CPU has no ragged all-to-all, and a fixed-size
  all-to-all is dropless only with buffers as large as the all-gather's.

A dropped assignment contributes zero (GShard does not renormalise the gate
of the surviving choice), so a token dropped by all its choices leaves the
MoE as zero and passes through the block's residual connection unchanged.
Padding tokens (`token_mask` False) take no capacity slot or block row, output zero and
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

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn
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


def block_rows(assignments: int, num_experts: int) -> int:
  """Rows per dropless block: a power of two near 1/8 of an expert's even share, in [8, 512].

  Padding is under one block per expert, about 1/8 of the rows when routing is
  even; smaller blocks pad less but make smaller matmuls (docs/benchmarks.md, Scaling).
  """
  share = max(1, assignments // (8 * num_experts))
  return min(512, max(8, 1 << (share.bit_length() - 1)))


class BlockLayout(NamedTuple):
  rows: jax.Array          # [s] int32: each assignment's row of the [m * r] buffer; m * r: absent
  block_expert: jax.Array  # [m] int32: the expert of each block
  used: jax.Array          # int32: blocks in use; the rest are skipped


def block_layout(experts: jax.Array, num_experts: int, rows: int) -> BlockLayout:
  """Experts [s] (outside [0, e): not here) -> m = ceil(s / r) + e blocks of r rows.

  A counting sort: expert i's assignments, in order, fill the blocks after those
  of experts < i, its last block padded. m covers the worst case, every
  assignment to one expert, with a partial block for each of the others.
  """
  m = -(-experts.shape[0] // rows) + num_experts
  chosen = jax.nn.one_hot(experts, num_experts, dtype=jnp.int32)        # [s, e]; 0 if absent
  blocks = -(-chosen.sum(0) // rows)                                     # [e]
  ends = jnp.cumsum(blocks)                                              # [e]
  rank = jnp.sum((jnp.cumsum(chosen, axis=0) - 1) * chosen, axis=-1)     # [s]
  start = rows * jnp.sum((ends - blocks) * chosen, axis=-1)              # [s]
  row = jnp.where(chosen.sum(-1) > 0, start + rank, m * rows)
  block_expert = jnp.minimum(jnp.searchsorted(ends, jnp.arange(m), side="right"),
                             num_experts - 1)
  return BlockLayout(row.astype(jnp.int32), block_expert.astype(jnp.int32),
                     ends[-1].astype(jnp.int32))


def _live(j: jax.Array, used: jax.Array, live, dead):
  return jax.lax.cond(j < used, live, dead)


@jax.custom_vjp
def grouped_matmul(x: jax.Array, w: jax.Array, block_expert: jax.Array,
                   used: jax.Array) -> jax.Array:
  """x [m, r, a] @ w[block_expert] -> [m, r, c], w: [e, a, c]; blocks from `used` on give 0.

  One matmul per block in a scan, so unused blocks cost nothing (`jax.lax.cond`).
  The backward pass adds each block's weight gradient into one [e, a, c]
  float32 buffer in place; autodiff of the scan would materialise an [e, a, c]
  cotangent per block, the largest cost of the layer's backward pass.
  """
  def block(_, xs):
    xb, i, j = xs                                                        # [r, a], (), ()
    return None, _live(j, used, lambda: xb @ w[i],
                       lambda: jnp.zeros((xb.shape[0], w.shape[-1]), xb.dtype))
  return jax.lax.scan(block, None, (x, block_expert, jnp.arange(x.shape[0])))[1]


def _grouped_matmul_fwd(x, w, block_expert, used):
  return grouped_matmul(x, w, block_expert, used), (x, w, block_expert, used)


def _grouped_matmul_bwd(res, dy):
  x, w, block_expert, used = res

  def block(dw, xs):
    xb, dyb, i, j = xs                                                   # [r, a], [r, c]
    def live():
      return (dw.at[i].add(jnp.dot(xb.T, dyb, preferred_element_type=jnp.float32)),
              (dyb @ w[i].T).astype(xb.dtype))
    return _live(j, used, live, lambda: (dw, jnp.zeros_like(xb)))

  dw, dx = jax.lax.scan(block, jnp.zeros(w.shape, jnp.float32),
                        (x, dy, block_expert, jnp.arange(x.shape[0])))
  return dx, dw.astype(w.dtype), None, None


grouped_matmul.defvjp(_grouped_matmul_fwd, _grouped_matmul_bwd)


class ExpertWeights(NamedTuple):
  wi: jax.Array  # [e, d, f]
  bi: jax.Array  # [e, f]
  wo: jax.Array  # [e, f, d]
  bo: jax.Array  # [e, d]


def _dropless_shard(x: jax.Array, experts: jax.Array, gates: jax.Array, w: ExpertWeights,
                    rng: jax.Array | None, *, rate: float, num_experts: int,
                    expert_axis: str | tuple[str, ...] | None, gather: bool) -> jax.Array:
  """One device: x [n, d], experts and gates [n, k] (expert -1: none) -> [n, d].

  `w` holds this device's e' experts: the e' after those of lower `expert_axis`
  indices. With `gather`, the tokens are split over `expert_axis`: they are all
  gathered, and each token's output, summed over this device's experts, is
  reduce-scattered back. Without it, they are the same on the axis: the outputs are summed.
  """
  if gather:
    x, experts, gates = (jax.lax.all_gather(a, expert_axis, tiled=True)
                         for a in (x, experts, gates))
  e_local = w.wi.shape[0]
  if expert_axis is not None:
    experts = experts - jax.lax.axis_index(expert_axis) * e_local
  n, k = experts.shape
  d = x.shape[-1]
  rows = block_rows(n * k, num_experts)
  layout = block_layout(experts.reshape(-1), e_local, rows)              # token-major
  m, be = layout.block_expert.shape[0], layout.block_expert
  buf = jnp.zeros((m * rows, d), x.dtype).at[layout.rows].set(jnp.repeat(x, k, axis=0),
                                                              mode="drop")
  h = grouped_matmul(buf.reshape(m, rows, d), w.wi, be, layout.used) + w.bi[be][:, None]
  h = layers.dropout(layers.gelu(h), rate, rng)                          # [m, r, f]
  y = grouped_matmul(h, w.wo, be, layout.used) + w.bo[be][:, None]       # [m, r, d]
  y = y.reshape(m * rows, d).at[layout.rows].get(mode="fill", fill_value=0)
  y = jnp.einsum("nk,nkd->nd", gates.astype(y.dtype), y.reshape(n, k, d))
  if gather:
    return jax.lax.psum_scatter(y, expert_axis, scatter_dimension=0, tiled=True)
  return y if expert_axis is None else jax.lax.psum(y, expert_axis)


def _mesh_axes(entry) -> tuple[str, ...]:
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def dropless(x: jax.Array, experts: jax.Array, gates: jax.Array, w: ExpertWeights,
             rng: jax.Array | None, *, rate: float) -> jax.Array:
  """Dropless experts: x [n, d], experts and gates [n, k] (expert -1: none) -> [n, d].

  Outside `sharding.use_mesh`, one device. Under it, per device (`jax.shard_map`):
  tokens split as `batch`, experts as `expert`; other weight shardings (`fsdp`
  on embed, `tensor` on mlp) are gathered first. Expert dropout draws per
  device and block row, so its masks depend on the layout.
  """
  num_experts = w.wi.shape[0]
  local = functools.partial(_dropless_shard, rate=rate, num_experts=num_experts)
  rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return local(x, experts, gates, w, rng, expert_axis=None, gather=False)
  tokens = sharding.logical_to_spec(("batch", None), rules, x.shape, mesh)
  specs = ExpertWeights(*(sharding.logical_to_spec(("expert",) + (None,) * (a.ndim - 1), rules,
                                                   a.shape, mesh) for a in w))
  axis = specs.wi[0]
  gather = bool(axis) and set(_mesh_axes(axis)) <= set(_mesh_axes(tokens[0]))

  def shard(x, experts, gates, w, rng):
    if rng is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(tuple(mesh.axis_names)))
    return local(x, experts, gates, w, rng, expert_axis=axis, gather=gather)

  return jax.shard_map(shard, mesh=mesh, in_specs=(tokens, tokens, tokens, specs, jax.P()),
                       out_specs=tokens, check_vma=False)(x, experts, gates, w, rng)


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
  """e independent GELU MLPs d -> f -> d, on capacity slots (`slots`) or dropless (`dropless`)."""

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

  def weights(self) -> ExpertWeights:
    return ExpertWeights(*(self._w(v) for v in (self.wi, self.bi, self.wo, self.bo)))


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
      y = self._dropless(xg, routing, valid, r_experts)
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

  def _dropless(self, xg: jax.Array, routing: Routing, valid: jax.Array,
                rng: jax.Array | None) -> jax.Array:
    """Block-sparse experts, padding routed nowhere: [g, t, d] -> [g, t, d]."""
    g, t, d = xg.shape
    experts = jnp.where(valid[..., None] > 0, routing.experts, -1).reshape(g * t, -1)
    y = dropless(xg.reshape(g * t, d), experts, routing.gates.reshape(g * t, -1),
                 self.experts.weights(), rng, rate=self.cfg.expert_dropout)
    return y.reshape(g, t, d)

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
