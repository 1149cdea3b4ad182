"""The MoE layer: dispatch paths agree, capacity drops are counted and pass through, aux losses."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from polyglot import sharding, trainer
from polyglot.errors import ConfigError
from polyglot.models import encoder, moe
from polyglot.models.config import MoEConfig, preset

D, F, E = 16, 32, 4
# One compiled call per test (eager op-by-op dispatch is slow on 8 host devices), with
# LLVM's optimisation off: it halves compile time and changes no test's outcome.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(f):
  return jax.jit(f, compiler_options=FAST_COMPILE)


@functools.cache
def initial_state() -> nnx.State:
  cfg = MoEConfig(num_experts=E, group_size=16)
  return jit(lambda: nnx.state(moe.MoeFeedForward(D, F, cfg, init_std=0.5,
                                                  rngs=nnx.Rngs(0))))()


def make_layer(**changes) -> moe.MoeFeedForward:
  """A layer with the config changes and weights shared by every test (initialised once)."""
  cfg = MoEConfig(**{"num_experts": E, "top_k": 2, "group_size": 16, **changes})
  graphdef, _ = nnx.split(nnx.eval_shape(
      lambda: moe.MoeFeedForward(D, F, cfg, init_std=0.5, rngs=nnx.Rngs(0))))
  # Fresh Variables (tree.map rebuilds them): a test may overwrite its layer's weights.
  return nnx.merge(graphdef, jax.tree.map(lambda a: a, initial_state()))


def apply(layer, x, rng=None, token_mask=None):
  graphdef, state = nnx.split(layer)
  return jit(lambda s, *args: nnx.merge(graphdef, s)(*args))(state, x, rng, token_mask)


def tokens(b=2, l=16, seed=0) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (b, l, D))


def force_routing(layer: moe.MoeFeedForward, x: jax.Array) -> jax.Array:
  """Every token's first choice is expert 0 and its second expert 1: feature 0 is 1."""
  kernel = np.zeros((D, E), np.float32)
  kernel[0, 0], kernel[0, 1] = 10.0, 5.0
  layer.router.kernel[...] = jnp.asarray(kernel)
  return x.at[..., 0].set(1.0)


@pytest.mark.parametrize("top_k", [1, 2])
def test_capacity_without_overflow_equals_dropless(top_k):
  # Capacity factor E: each expert has a slot for every token of its group.
  layer = make_layer(top_k=top_k, dispatch="capacity", capacity_factor_eval=float(E))
  dropless = make_layer(top_k=top_k, dispatch="dropless")
  x = tokens()
  y_cap, aux_cap = apply(layer, x)
  y_drop, aux_drop = apply(dropless, x)
  assert float(aux_cap["moe_dropped"]) == 0.0
  np.testing.assert_allclose(y_cap, y_drop, rtol=1e-5, atol=1e-5)
  for k in ("load_balance_loss", "router_z_loss", "moe_assignments", "moe_expert_assignments"):
    np.testing.assert_allclose(aux_cap[k], aux_drop[k], rtol=1e-6)

  def grads(m):
    graphdef, state = nnx.split(m)
    def f(s):
      return jnp.sum(nnx.merge(graphdef, s)(x)[0] * jnp.cos(x))  # weighs every output
    return jax.tree.leaves(jit(jax.grad(f))(state))
  for a, b in zip(grads(layer), grads(dropless), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dispatch", ["capacity", "dropless"])
def test_padding_takes_no_slot_and_outputs_zero(dispatch):
  layer = make_layer(dispatch=dispatch)
  x = tokens()
  mask = jnp.arange(16)[None, :] < jnp.array([[16], [9]])  # row 1: 7 padding tokens
  y, aux = apply(layer, x, None, mask)
  assert float(aux["moe_assignments"]) == 2 * (16 + 9)
  np.testing.assert_array_equal(y[1, 9:], 0.0)
  assert np.all(np.abs(np.asarray(y[1, :9])).sum(-1) > 0)
  # Real tokens' outputs do not depend on what padding holds.
  y2, _ = apply(layer, x.at[1, 9:].set(7.0), None, mask)
  np.testing.assert_allclose(y2[:, :9], y[:, :9], rtol=1e-6, atol=1e-6)


def test_tight_capacity_drops_counted_and_dropped_tokens_output_zero():
  # c = ceil(top_k * 0.5 * t / E) = 4 slots per expert for t = 16 tokens, one group.
  layer = make_layer(capacity_factor_eval=0.5, min_capacity=1)
  assert moe.expert_capacity(16, E, 2, 0.5, 1) == 4
  x = force_routing(layer, tokens(b=1))
  mask = jnp.arange(16)[None, :] >= 2  # tokens 0 and 1 are padding: they take no slot
  y, aux = apply(layer, x, None, mask)
  # 14 real tokens x 2 choices; experts 0 and 1 keep 4 each (tokens 2..5).
  assert float(aux["moe_assignments"]) == 28.0
  assert float(aux["moe_dropped"]) == 20.0
  np.testing.assert_allclose(moe.router_metrics(aux)["dropped_fraction"], 20 / 28)
  np.testing.assert_array_equal(aux["moe_expert_assignments"], [14, 14, 0, 0])
  out = np.abs(np.asarray(y[0])).sum(-1)
  assert np.all(out[2:6] > 0)
  np.testing.assert_array_equal(out[:2], 0.0)
  np.testing.assert_array_equal(out[6:], 0.0)


def test_dropped_tokens_pass_through_the_block_residual():
  # Capacity 1 per expert (top-1, factor 0.25, 16 tokens, 4 experts): most tokens drop.
  cfg = preset("moe_tiny", dropout_rate=0.0, attention_dropout_rate=0.0,
               moe=MoEConfig(num_experts=4, top_k=1, group_size=16, capacity_factor_eval=0.25,
                             min_capacity=1))
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: encoder.Block(cfg, 1, rngs=nnx.Rngs(0))))
  state = jit(lambda: nnx.state(encoder.Block(cfg, 1, rngs=nnx.Rngs(0))))()
  x = jax.random.normal(jax.random.key(0), (1, 16, cfg.hidden_size))
  valid = jnp.ones((1, 16), bool)
  segment_ids = valid.astype(jnp.int32)

  def run(state):
    block = nnx.merge(graphdef, state)
    h = block.attention_norm(x + block.attention(x, segment_ids, None))  # the feed-forward's input
    y, aux = block.feed_forward(h, None, valid)
    out, _ = block(x, segment_ids, None, valid)
    return y[0], aux, out[0], block.output_norm(h)[0]  # LN(h + 0): the residual alone

  y, aux, out, passed = jit(run)(state)
  dropped = np.abs(np.asarray(y)).sum(-1) == 0
  assert dropped.sum() == float(aux["moe_dropped"]) >= 12
  np.testing.assert_allclose(out[dropped], passed[dropped], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out[~dropped], passed[~dropped], atol=1e-3)


def test_top2_gates_are_renormalised_and_top1_gate_is_the_probability():
  x = tokens()
  for top_k in (1, 2):
    layer = make_layer(top_k=top_k)
    routing = layer.router(x.reshape(2, 16, D), jnp.ones((2, 16)), None)
    top = jnp.sort(routing.probs, axis=-1)[..., ::-1][..., :top_k]  # [g, t, k]
    expected = top / top.sum(-1, keepdims=True) if top_k == 2 else top
    np.testing.assert_allclose(routing.gates, expected, rtol=1e-6)
    if top_k == 2:
      np.testing.assert_allclose(routing.gates.sum(-1), 1.0, rtol=1e-6)


def test_top_k_equals_lax_top_k_ties_included():
  probs = jax.random.uniform(jax.random.key(0), (3, 5, 6))
  probs = probs.at[0, 0].set(jnp.array([0.2, 0.3, 0.3, 0.1, 0.05, 0.05]))  # a tie for first
  for k in (1, 2):
    gates, experts = moe.top_k(probs, k)
    ref_gates, ref_experts = jax.lax.top_k(probs, k)
    np.testing.assert_array_equal(experts, ref_experts)
    np.testing.assert_array_equal(gates, ref_gates)


def test_capacity_dispatch_exchanges_tokens_by_all_to_all():
  """Experts stay on their devices; tokens move (GShard): no gather of tokens or weights."""
  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, expert=4))
  layer = make_layer()
  graphdef, state = nnx.split(layer)
  state = jax.device_put(state, sharding.state_shardings(state, mesh))
  x = jax.device_put(tokens(b=8), NamedSharding(mesh, P(("data", "fsdp", "expert"))))
  with sharding.use_mesh(mesh):
    hlo = jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, x).compile().as_text()
  assert hlo.count("all-to-all(") == 2  # dispatch and combine
  assert "all-gather(" not in hlo


def routing_of(probs: np.ndarray, top_k: int = 1) -> moe.Routing:
  probs = jnp.asarray(probs, jnp.float32)[None]                      # [1, t, e]
  gates, experts = jax.lax.top_k(probs, top_k)
  return moe.Routing(jnp.log(probs), probs, experts, gates)


def test_load_balance_loss_is_its_weight_when_uniform_and_follows_switch_eq4():
  t = 8
  # Uniform: every expert gets 1/E of the first choices and 1/E of the probability.
  probs = np.full((t, E), 1.0 / E) + np.eye(E)[np.arange(t) % E] * 1e-3
  probs /= probs.sum(-1, keepdims=True)
  loss = moe.load_balance_loss(routing_of(probs), jnp.ones((1, t)), 0.01)
  np.testing.assert_allclose(loss, 0.01, rtol=1e-5)
  # Skewed, with two padding tokens that must not count.
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(E) * 0.3, t)
  valid = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)
  f = np.bincount(probs[:6].argmax(-1), minlength=E) / 6
  p = probs[:6].mean(0)
  loss = moe.load_balance_loss(routing_of(probs), jnp.asarray(valid)[None], 0.01)
  np.testing.assert_allclose(loss, 0.01 * E * np.sum(f * p), rtol=1e-5)
  assert loss > 0.01


def test_router_z_loss_is_mean_squared_logsumexp_of_real_tokens():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(1, 6, E)).astype(np.float32) * 3
  valid = np.array([[1, 1, 1, 1, 0, 0]], np.float32)
  routing = moe.Routing(jnp.asarray(logits), jax.nn.softmax(logits), None, None)
  lse = np.log(np.exp(logits[0, :4]).sum(-1))
  np.testing.assert_allclose(moe.router_z_loss(routing, jnp.asarray(valid), 1e-3),
                             1e-3 * np.mean(lse ** 2), rtol=1e-5)


def test_training_uses_the_train_capacity_and_jitter():
  layer = make_layer(capacity_factor_train=0.5, capacity_factor_eval=4.0, router_jitter=0.1,
                     min_capacity=1)
  x = tokens()
  _, eval_aux = apply(layer, x)
  _, train_aux = apply(layer, x, jax.random.key(0))
  assert float(eval_aux["moe_dropped"]) == 0.0 and float(train_aux["moe_dropped"]) > 0.0
  # Jitter perturbs the router input (and so the z-loss) in training only.
  no_jitter = make_layer(capacity_factor_train=0.5, capacity_factor_eval=4.0, min_capacity=1)
  _, eval_no_jitter = apply(no_jitter, x)
  _, train_no_jitter = apply(no_jitter, x, jax.random.key(0))
  assert float(eval_aux["router_z_loss"]) == float(eval_no_jitter["router_z_loss"])
  assert float(train_aux["router_z_loss"]) != float(train_no_jitter["router_z_loss"])


def test_groups_and_capacity():
  assert moe.num_groups(4096, 4096) == 1
  assert moe.num_groups(8 * 16, 16) == 8
  assert moe.num_groups(3 * 10, 16) == 2   # 15 tokens each
  assert moe.num_groups(7, 2) == 7          # prime: one token per group
  # GShard: top_k * factor * t / e, at least min_capacity, at most t.
  assert moe.expert_capacity(4096, 64, 2, 1.25, 4) == 160
  assert moe.expert_capacity(16, 4, 1, 1.0, 8) == 8
  assert moe.expert_capacity(4, 4, 2, 1.0, 8) == 4


def test_block_layout_sorts_by_expert_into_padded_blocks():
  """Against a loop: expert i's assignments, in order, after whole blocks of experts < i."""
  rng = np.random.default_rng(0)
  e, rows = 5, 4
  experts = rng.integers(-1, e + 2, 60)        # -1 and e, e + 1: not on this device
  experts[:7] = 2                                # one expert with more than a block
  layout = jax.jit(moe.block_layout, static_argnums=(1, 2))(jnp.asarray(experts), e, rows)
  m = -(-60 // rows) + e
  want_rows, block_expert, block = np.full(60, m * rows), [], 0
  for i in range(e):
    mine = np.flatnonzero(experts == i)
    want_rows[mine] = block * rows + np.arange(len(mine))
    n_blocks = -(-len(mine) // rows)
    block_expert += [i] * n_blocks
    block += n_blocks
  np.testing.assert_array_equal(layout.rows, want_rows)
  assert int(layout.used) == block
  np.testing.assert_array_equal(layout.block_expert[:block], block_expert)
  np.testing.assert_array_equal(layout.block_expert[block:], e - 1)
  assert layout.block_expert.shape == (m,)
  # The worst case fits: every assignment to one expert.
  worst = moe.block_layout(jnp.zeros(60, jnp.int32), e, rows)
  assert int(worst.used) == 15 and int(worst.rows.max()) == 59
  assert moe.block_rows(16384, 8) == 256 and moe.block_rows(64, 4) == 8
  assert moe.block_rows(10**7, 2) == 512


def test_grouped_matmul_values_and_gradients_skip_unused_blocks():
  m, r, a, c, e, used = 6, 3, 5, 4, 3, 4
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (m, r, a))
  w = jax.random.normal(keys[1], (e, a, c))
  block_expert = jnp.array([0, 0, 2, 1, 1, 2])
  dy = jax.random.normal(keys[2], (m, r, c))

  def reference(x, w):  # every block's matmul, then the unused ones zeroed
    live = (jnp.arange(m) < used)[:, None, None]
    return jnp.where(live, jnp.einsum("mra,mac->mrc", x, w[block_expert]), 0.0)

  def loss(f):
    return lambda x, w: jnp.sum(f(x, w) * dy)
  gmm = lambda x, w: moe.grouped_matmul(x, w, block_expert, jnp.int32(used))  # noqa: E731
  np.testing.assert_allclose(jax.jit(gmm)(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
  got = jax.jit(jax.grad(loss(gmm), argnums=(0, 1)))(x, w)
  want = jax.grad(loss(reference), argnums=(0, 1))(x, w)
  for g, h in zip(got, want, strict=True):
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[0][used:], 0.0)  # skipped blocks get no gradient


def test_dropless_exchanges_tokens_by_all_gather_and_reduce_scatter():
  """Experts on the `expert` axis: each device all-gathers the axis' tokens, runs its expert
  and reduce-scatters the outputs (tests/test_sharding.py checks the values)."""
  mesh = sharding.make_mesh(sharding.MeshConfig(data=2, expert=4))
  layer = make_layer(dispatch="dropless")
  graphdef, state = nnx.split(layer)
  state = jax.device_put(state, sharding.state_shardings(state, mesh))
  x = jax.device_put(tokens(b=8), NamedSharding(mesh, P(("data", "fsdp", "expert"))))
  with sharding.use_mesh(mesh):
    hlo = jit(lambda s, x: nnx.merge(graphdef, s)(x)[0]).lower(state, x).compile().as_text()
  assert hlo.count("all-gather(") == 3  # tokens, their experts and their gates
  assert hlo.count("reduce-scatter(") == 1
  assert "all-to-all(" not in hlo


def test_experts_of_width_mlp_over_top_k_cost_the_dense_flops_plus_the_router():
  dense = preset("small")
  cfg = dense.replace(moe=MoEConfig(num_experts=8, top_k=2, expert_mlp_dim=512))
  model = nnx.eval_shape(lambda: encoder.Encoder(cfg, rngs=nnx.Rngs(0)))
  assert model.layers[1].feed_forward.experts.wi.shape == (8, 256, 512)
  assert model.layers[1].feed_forward.experts.wo.shape == (8, 512, 256)
  # 2 MoE layers, each adding a [d, e] router and the second expert's output bias [d],
  # forward and backward (6 x); dispatch and combine count nothing.
  extra = 6 * 2 * (256 * 8 + 256)
  assert trainer.flops_per_token(cfg, 128) == trainer.flops_per_token(dense, 128) + extra
  with pytest.raises(ConfigError, match=r"MoEConfig.expert_mlp_dim=0 is invalid"):
    MoEConfig(expert_mlp_dim=0)
