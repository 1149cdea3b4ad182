"""Meshes, logical-axis rules, sharded init, and sharded == single-device training steps."""
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from polyglot import memory, models, objectives, optimizer, sharding, train
from polyglot.objectives import mlm
from polyglot.errors import ConfigError
from polyglot.models import moe
from polyglot.sharding import DEFAULT_RULES, MeshConfig

# Dims divide every mesh below: d=64, heads=4, f=128, vocab=512, experts=4. One layer
# each keeps compilation short: a dense block, and an MoE block (every_n_layers=1).
NO_DROPOUT = dict(vocab_size=512, max_len=32, num_layers=1, dropout_rate=0.0,
                  attention_dropout_rate=0.0)
DENSE = models.preset("tiny", **NO_DROPOUT)
# Capacity 4 per expert and group of 16 tokens in training: some tokens are dropped.
MOE = models.preset("moe_tiny", **NO_DROPOUT,
                    moe=models.MoEConfig(num_experts=4, top_k=2, every_n_layers=1,
                                         group_size=16, capacity_factor_train=0.5))
# Dropless: nothing dropped; under an expert axis, tokens all-gathered and outputs reduce-scattered.
DROPLESS = MOE.replace(moe=dataclasses.replace(MOE.moe, dispatch="dropless"))
MODELS = {"dense": DENSE, "moe": MOE, "dropless": DROPLESS}
SINGLE = MeshConfig(data=1)
MESHES = {
    "data=8": MeshConfig(data=8),
    "fsdp=8": MeshConfig(data=1, fsdp=8),
    "data=2,fsdp=2,tensor=2": MeshConfig(data=2, fsdp=2, tensor=2),
    "data=2,expert=4": MeshConfig(data=2, expert=4),
}
# Per-device shard of the dense MLP kernel [d, f] = ("embed", "mlp") on each mesh.
WI_SHARD = {"data=8": (64, 128), "fsdp=8": (8, 128), "data=2,fsdp=2,tensor=2": (32, 64)}
# Experts' first kernel [e, d, f] = ("expert", "embed", "mlp").
EXPERTS_WI_SHARD = {"data=8": (4, 64, 128), "fsdp=8": (4, 8, 128),
                    "data=2,fsdp=2,tensor=2": (4, 32, 64), "data=2,expert=4": (1, 64, 128)}
# The real step, small: 2 steps on 16 rows of 16 tokens, the MLM head at the top half of each
# row by loss weight, 2 microbatches (8 rows: one per device on 8-way batch meshes), AdamW.
# With XLM-R's dropout (0.1): the masks, keyed by fold_in(rng, step), must not depend on the
# mesh either.
STEPS, BATCH, LENGTH = 2, 16, 16
TRAIN_DROPOUT = dict(dropout_rate=0.1, attention_dropout_rate=0.1)
LOSS = mlm.LossConfig(microbatches=2, prediction_rate=0.5)
OPTIM = optimizer.OptimConfig(learning_rate=1e-3, warmup_steps=0)
# float32: reductions in another order differ by a few ulps; 1e-5 of each tensor's scale.
RTOL = 1e-5
METRIC_ATOL = 1e-7  # metrics that are 0 (mlm_unpredicted) or near it
# Parameters after AdamW, which divides each gradient by sqrt(v) + eps: an entry with |g|
# near eps = 1e-6 carries its rounding (~1e-7 of its leaf's largest gradient) into its step.
# Measured: at most 8.6e-7 = 0.00086 lr beyond RTOL over both steps, on every mesh; a real
# difference (a cross-device sum missed or doubled) moves entries by ~lr = 1e-3.
PARAM_ATOL = 5e-3 * OPTIM.learning_rate
# Sharding is decided in HLO (the SPMD partitioner); LLVM's optimisation level does not
# change it and halves compile time on CPU.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def mlm_batch(cfg, b=8, l=16, seed=0) -> dict[str, np.ndarray]:
  """Rows of two packed segments, the last rows padded; 15% of real tokens predicted."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, l // 2, (b, 2))
  lengths[-2:, 1] = 0  # trailing padding on the last rows
  segment_ids = np.zeros((b, l), np.int32)
  positions = np.zeros((b, l), np.int32)
  for r, (n1, n2) in enumerate(lengths):
    segment_ids[r, :n1], segment_ids[r, n1:n1 + n2] = 1, 2
    positions[r, :n1], positions[r, n1:n1 + n2] = np.arange(n1), np.arange(n2)
  targets = rng.integers(4, cfg.vocab_size - 1, (b, l)).astype(np.int32)
  weights = ((rng.random((b, l)) < 0.15) & (segment_ids > 0)).astype(np.int32)
  weights[:, 0] = 1  # every row predicts something
  input_ids = np.where(weights > 0, cfg.mask_id, targets)
  input_ids = np.where(segment_ids > 0, input_ids, cfg.pad_id).astype(np.int32)
  return dict(input_ids=input_ids, targets=targets, loss_weights=weights,
              segment_ids=segment_ids, positions=positions)


def train_steps(cfg, mesh):
  """(per-step metrics on the host, final sharded params) of STEPS real training steps on
  `mesh`: the state from `train.fresh_state` (initialised in its shards), the step from
  `train.compile_steps` (jitted `trainer.train_step`: prediction gather, microbatches,
  clipping, AdamW, in/out shardings, donated state), one new batch per step, dropout on."""
  cfg = cfg.replace(**TRAIN_DROPOUT)
  run = train.RunConfig(model=cfg, train=train.TrainConfig(num_steps=STEPS, batch_size=BATCH,
                                                           seq_len=LENGTH),
                        optim=OPTIM, loss=LOSS)
  setup = train.make_setup(cfg, run, mesh)
  batch_sharding = sharding.batch_shardings(jax.ShapeDtypeStruct((BATCH, LENGTH), jnp.int32),
                                            mesh, run.rules)
  step_fn, _ = train.compile_steps(setup, batch_sharding, objectives.mlm_only(run.loss))
  state = train.fresh_state(setup, cfg, run, mesh, vocab=None)
  rng, metrics = jax.random.key(run.train.seed), []
  with sharding.use_mesh(mesh, run.rules):
    for i in range(STEPS):
      batch = {"mlm": jax.device_put(mlm_batch(cfg, BATCH, LENGTH, seed=i), batch_sharding)}
      if i == 0:
        step_fn = step_fn.lower(state, batch, rng).compile(FAST_COMPILE)
      state, m = step_fn(state, batch, rng)
      metrics.append(jax.device_get(m))
  assert int(state.step) == STEPS
  return metrics, state.params


def assert_close_trees(a, b, atol=0.0):
  """Leaf by leaf (same tree): rtol RTOL, atol RTOL x the leaf's largest entry, plus `atol`."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=RTOL * np.abs(y).max() + atol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def single_device_results():
  mesh = sharding.make_mesh(SINGLE, jax.devices()[:1])
  return {name: train_steps(cfg, mesh) for name, cfg in MODELS.items()}


def shard_shape(x: jax.Array) -> tuple[int, ...]:
  shapes = {s.data.shape for s in x.addressable_shards}
  assert len(shapes) == 1, shapes
  return shapes.pop()


@pytest.mark.parametrize("model,mesh_name", [("dense", m) for m in WI_SHARD] +
                         [("moe", m) for m in EXPERTS_WI_SHARD] +
                         [("dropless", m) for m in ("data=8", "data=2,fsdp=2,tensor=2",
                                                    "data=2,expert=4")])
def test_sharded_train_steps_equal_single_device(model, mesh_name, single_device_results):
  """STEPS real train steps on the mesh: every metric of every step (loss, gradient, update
  and parameter norms, for MoE the dropped fraction and expert loads: the same tokens
  dropped) and every updated weight equal the single-device run's."""
  mesh = sharding.make_mesh(MESHES[mesh_name])
  metrics, params = train_steps(MODELS[model], mesh)
  ref_metrics, ref_params = single_device_results[model]
  assert any(k.startswith("moe_") for k in ref_metrics[0]) == (model != "dense")
  for step, (got, want) in enumerate(zip(metrics, ref_metrics, strict=True), 1):
    assert sorted(got) == sorted(want)
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=METRIC_ATOL,
                                 err_msg=f"step {step}: {name}")
  assert_close_trees(params, ref_params, atol=PARAM_ATOL)
  # The weights are really split as the rules say.
  feed_forward = params["encoder"]["layers"][0]["feed_forward"]
  if model == "dense":
    wi = feed_forward["wi"]["kernel"]
    assert wi.sharding.spec == P("fsdp", "tensor") and shard_shape(wi) == WI_SHARD[mesh_name]
  else:
    wi = feed_forward["experts"]["wi"]
    assert wi.sharding.spec == P("expert", "fsdp", "tensor")
    assert shard_shape(wi) == EXPERTS_WI_SHARD[mesh_name]
  assert metrics[-1]["loss"] != metrics[0]["loss"]  # two batches, two different losses


def test_moe_aux_counts_real_tokens_only():
  """The trainer's `loss_fn` on a batch with padding: the router counts real tokens only."""
  graphdef, params = nnx.split(models.MaskedLM(MOE, rngs=nnx.Rngs(0)))
  batch = mlm_batch(MOE)
  total = jnp.float32(batch["loss_weights"].sum())
  loss = lambda p, b: mlm.loss_fn(  # noqa: E731
      p, graphdef=graphdef, batch=b, total_weight=total, dropout_rng=jax.random.key(1),
      loss_cfg=mlm.LossConfig(prediction_rate=None))
  _, aux = jax.jit(loss)(nnx.to_pure_dict(params), batch)
  real = int((batch["segment_ids"] > 0).sum())
  assert real < batch["segment_ids"].size  # the batch has padding
  moe_layers = sum(MOE.moe.is_moe_layer(i) for i in range(MOE.num_layers))
  assert float(aux["moe_assignments"]) == MOE.moe.top_k * real * moe_layers
  assert 0 < float(aux["moe_dropped"]) < float(aux["moe_assignments"])
  counts = {k: v for k, v in aux.items() if k.startswith("moe_")}
  np.testing.assert_allclose(moe.router_metrics(counts)["expert_load"].sum(), 1.0, rtol=1e-6)
  assert moe.router_metrics({}) == {}


def test_sharded_init_creates_each_weight_in_its_shards():
  mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  model = sharding.create_sharded_model(lambda: models.MaskedLM(DENSE, rngs=nnx.Rngs(0)), mesh)
  word = model.encoder.embeddings.word[...]                    # [v, d] = ("vocab", "embed")
  assert word.sharding.spec == P("tensor", "fsdp") and shard_shape(word) == (256, 32)
  query = model.encoder.layers[0].attention.query.kernel[...]  # [d, h, k]
  assert query.sharding.spec == P("fsdp", "tensor", None) and shard_shape(query) == (32, 2, 16)
  # The same values as an unsharded initialisation from the same seed.
  unsharded = jax.jit(lambda: nnx.state(models.MaskedLM(DENSE, rngs=nnx.Rngs(0))),
                      compiler_options=FAST_COMPILE)()
  assert_close_trees(nnx.state(model), unsharded)


def test_optimizer_state_follows_the_params():
  mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8))
  _, state, shardings = sharding.abstract_state(
      lambda: models.MaskedLM(DENSE, rngs=nnx.Rngs(0)), mesh)
  params, param_shardings = nnx.to_pure_dict(state), nnx.to_pure_dict(shardings)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
  opt = sharding.optimizer_shardings(tx, jax.eval_shape(tx.init, params), param_shardings, mesh)
  adam = opt[1][0]
  assert adam.mu == param_shardings and adam.nu == param_shardings
  assert adam.count.spec == P()


def test_logical_to_spec_claims_each_mesh_axis_once_and_falls_back_when_indivisible():
  mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  # Activations: batch takes fsdp before embed can.
  assert sharding.logical_to_spec(("batch", "length", "embed"), DEFAULT_RULES) == \
      P(("data", "fsdp", "expert"), None, None)
  # Dispatched experts: expert first, the groups keep the other batch axes.
  assert sharding.logical_to_spec(("expert", "batch", None, "embed"), DEFAULT_RULES) == \
      P("expert", ("data", "fsdp"), None, None)
  # XLM-R's 250002-row vocabulary does not divide tensor=4: replicated along it.
  mesh4 = sharding.make_mesh(MeshConfig(data=2, tensor=4))
  assert sharding.logical_to_spec(("vocab", "embed"), DEFAULT_RULES, (250002, 64), mesh4) == \
      P(None, "fsdp")
  # 6 rows over data x fsdp = 4: the longest dividing prefix (data) is kept.
  assert sharding.logical_to_spec(("batch",), DEFAULT_RULES, (6,), mesh) == P("data")
  with pytest.raises(ConfigError, match="logical axis 'embedding' is unknown"):
    sharding.logical_to_spec(("embedding",), DEFAULT_RULES)


def test_indivisible_params_log_a_fallback_and_indivisible_batches_are_errors(caplog):
  mesh = sharding.make_mesh(MeshConfig(data=2, tensor=4))
  cfg = DENSE.replace(vocab_size=1002)  # 1002 rows do not divide tensor=4
  with caplog.at_level(logging.WARNING, logger="polyglot.sharding"):
    _, _, shardings = sharding.abstract_state(lambda: models.MaskedLM(cfg, rngs=nnx.Rngs(0)),
                                              mesh)
  assert shardings["encoder"]["embeddings"]["word"].get_value().spec == P(None, "fsdp")
  assert "('vocab', 'embed') (1002, 64) does not divide" in caplog.text
  batch = {"input_ids": jax.ShapeDtypeStruct((3, 16), jnp.int32)}  # 3 rows over data=2
  with pytest.raises(ConfigError, match=r"batch shape \(3, 16\) does not divide"):
    sharding.batch_shardings(batch, mesh)


def test_constraints_apply_inside_use_mesh_only():
  mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  f = lambda x: sharding.constrain(x * 2, ("batch", "length", "embed"))  # noqa: E731
  x = jnp.ones((8, 4, 6))
  assert "sharding_constraint" not in jax.jit(f).lower(x).as_text()
  with sharding.use_mesh(mesh):
    out = jax.jit(f)(x)
  assert out.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"))), 3)


def test_mesh_config_fills_one_axis_and_names_bad_values():
  mesh = sharding.make_mesh(MeshConfig(data=-1, tensor=2))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2, "expert": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ConfigError, match="does not fit 8 devices"):
    sharding.make_mesh(MeshConfig(data=3))
  with pytest.raises(ConfigError, match="at most one axis may be -1"):
    MeshConfig(data=-1, fsdp=-1)
  with pytest.raises(ConfigError, match="MeshConfig.tensor=0 is invalid"):
    MeshConfig(tensor=0)
  with pytest.raises(ConfigError, match="expert must stay inside a slice"):
    MeshConfig(dcn_shape=(1, 1, 1, 2))
  with pytest.raises(ConfigError, match="dcn_shape=.* does not match the slices or hosts"):
    sharding.make_mesh(MeshConfig(data=4, dcn_shape=(2, 1, 1, 1)))  # one process here
  with pytest.raises(ConfigError, match="rule for 'embed' is invalid"):
    sharding.check_rules(DEFAULT_RULES + (("embed", None),))


HYBRID_WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2,
                               process_id=int(sys.argv[2]))
    from polyglot import sharding
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, dcn_shape=(2, 1, 1, 1)))
    owners = [[d.process_index for d in row] for row in mesh.devices[:, :, 0, 0]]
    print(json.dumps({"shape": dict(mesh.shape), "owners": owners}))
    jax.distributed.shutdown()
""")


def test_hybrid_mesh_puts_data_across_hosts_and_the_rest_inside():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, "-c", HYBRID_WORKER, str(port), str(i)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
  result = json.loads(outs[0][0].strip().splitlines()[-1])
  assert result["shape"] == {"data": 4, "fsdp": 2, "tensor": 1, "expert": 1}
  # ICI data=2 x DCN data=2: rows 0-1 on host 0, rows 2-3 on host 1; fsdp stays on a host.
  assert result["owners"] == [[0, 0], [0, 0], [1, 1], [1, 1]]


def test_memory_plan_counts_shards_without_allocating():
  mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8))
  result = memory.plan(DENSE, mesh, batch_size=8, seq_len=16)
  _, state = nnx.split(nnx.eval_shape(lambda: models.MaskedLM(DENSE, rngs=nnx.Rngs(0))))
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  # Every weight with an `embed` axis is split 8 ways; biases without one are whole.
  assert total / 8 < result.params < total / 4
  assert result.optimizer == 2 * result.params + 8  # mu, nu like params; Adam and schedule counts
  assert result.batch == 5 * 16 * 4                # 5 int32 [8, 16] arrays, one row each
  assert result.temp > 0 and result.peak >= result.params + result.optimizer + result.temp


def test_memory_plan_of_rtd_counts_the_generator():
  """`objective="rtd"` plans the MRTD step: the parameters (and AdamW moments) of the encoder,
  its generator and detection head, sharded like the encoder's."""
  from polyglot.models import rtd  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8))
  mlm = memory.plan(DENSE, mesh, batch_size=8, seq_len=16)
  result = memory.plan(DENSE, mesh, batch_size=8, seq_len=16, objective="rtd")
  generator = rtd.generator_config(DENSE, 1 / 3)
  _, state = nnx.split(nnx.eval_shape(
      lambda: models.build("masked_lm", DENSE, rngs=nnx.Rngs(0), generator=generator)))
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  assert total / 8 < result.params < total / 4 and result.params > mlm.params
  assert result.optimizer == 2 * result.params + 8
  assert result.temp > 0
