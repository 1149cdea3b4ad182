"""The objectives layer: MLM unchanged, XLCo's loss and state, every objective (RTD too)
sharded.

References are independent computations: the train step as it was before the
objectives layer (read from the repository's history), numpy InfoNCE, and the
single-device step for the sharded ones.
"""
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyglot import models, objectives, optimizer, sharding, train, trainer
from polyglot.errors import ConfigError
from polyglot.models import rtd as rtd_model
from polyglot.objectives import rtd, xlco

CFG = models.preset("tiny")  # dropout on, as pretraining has it
BEFORE_OBJECTIVES = "e9900a3"  # the last commit whose trainer held MLM itself


def mlm_batch(seed=0, b=8, l=16, vocab=CFG.vocab_size):
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, vocab - 1, (b, l)).astype(np.int32)
  segment_ids = np.repeat([[1] * (l // 2) + [2] * (l // 4) + [0] * (l - l // 2 - l // 4)], b, 0)
  return dict(input_ids=ids, targets=np.roll(ids, 1, axis=1),
              loss_weights=((rng.random((b, l)) < 0.3) & (segment_ids > 0)).astype(np.int32),
              segment_ids=segment_ids.astype(np.int32),
              positions=np.tile(np.arange(l, dtype=np.int32), (b, 1)))


def pair_batch(seed=0, b=8, l=12, vocab=CFG.vocab_size):
  rng = np.random.default_rng(seed)
  def side():
    ids = rng.integers(4, vocab - 1, (b, l)).astype(np.int32)
    ids[:, 0], lengths = 0, rng.integers(3, l + 1, b)
    for row, n in zip(ids, lengths):
      row[n - 1], row[n:] = 2, 1
    return ids
  return {"query_ids": side(), "key_ids": side()}


def _trainer_before_objectives() -> types.ModuleType:
  try:
    source = subprocess.run(["git", "show", f"{BEFORE_OBJECTIVES}:polyglot/trainer.py"],
                            capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    pytest.skip(f"commit {BEFORE_OBJECTIVES} is not in this clone's history")
  module = types.ModuleType("trainer_before_objectives")
  sys.modules[module.__name__] = module  # dataclasses look their module up while defining
  try:
    exec(compile(source, "trainer_before_objectives.py", "exec"), module.__dict__)  # pylint: disable=exec-used
  finally:
    del sys.modules[module.__name__]
  return module


def test_mlm_step_is_bit_identical_to_the_step_before_objectives():
  """Same batch, seed and dropout: 2 microbatches, prediction gather, AdamW; params,
  optimizer state, gradient norm and accuracy equal to the bit. The loss value is equal to
  float32 rounding: accuracy no longer takes an argmax, and XLA fuses the loss's sum with
  the new pass in another order (its gradients are untouched)."""
  old = _trainer_before_objectives()
  graphdef, state = nnx.split(models.MaskedLM(CFG, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  tx, schedule = optimizer.make_optimizer(optimizer.OptimConfig(warmup_steps=0), 10)
  loss_cfg = objectives.LossConfig(microbatches=2, prediction_rate=0.5)
  old_step = jax.jit(old.bind_train_step(graphdef, tx, schedule, old.LossConfig(
      microbatches=2, prediction_rate=0.5)))
  new_step = jax.jit(trainer.bind_train_step(graphdef, tx, schedule,
                                             objectives.mlm_only(loss_cfg)))
  s_old, s_new = old.init_state(params, tx), trainer.init_state(params, tx)
  for i in range(2):
    batch = mlm_batch(seed=i)
    s_old, m_old = old_step(s_old, batch, jax.random.key(3))
    s_new, m_new = new_step(s_new, {"mlm": batch}, jax.random.key(3))
    for name in ("mlm_accuracy", "grad_norm"):
      assert np.array_equal(m_old[name], m_new[name]), name
    for name in ("loss", "mlm_loss"):
      np.testing.assert_allclose(m_new[name], m_old[name], rtol=5e-7, err_msg=name)
  for a, b in zip(jax.tree.leaves((s_old.params, s_old.opt_state)),
                  jax.tree.leaves((s_new.params, s_new.opt_state)), strict=True):
    assert np.array_equal(a, b)


def numpy_info_nce(q, k, queue, filled, temperature):
  losses, correct = [], []
  for qi, ki in zip(q, k):
    logits = np.concatenate([[qi @ ki], queue[:filled] @ qi]) / temperature
    m = logits.max()
    losses.append(m + np.log(np.exp(logits - m).sum()) - logits[0])
    correct.append(logits.argmax() == 0)
  return np.mean(losses), np.mean(correct)


def test_info_nce_against_numpy():
  rng = np.random.default_rng(0)
  q, k = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
  queue = rng.normal(size=(12, 8))
  for filled in (0, 5, 12):
    valid = np.arange(12) < filled
    loss, acc = xlco.info_nce(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue),
                              jnp.asarray(valid), 0.25)
    want_loss, want_acc = numpy_info_nce(q, k, queue, filled, 0.25)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    assert float(acc) == pytest.approx(want_acc)
  loss, acc = xlco.in_batch_nce(jnp.asarray(q), jnp.asarray(k), 0.5)
  logits = q @ k.T / 0.5
  m = logits.max(1, keepdims=True)
  want = (m[:, 0] + np.log(np.exp(logits - m).sum(1)) - np.diag(logits)).mean()
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert float(acc) == pytest.approx(np.mean(logits.argmax(1) == np.arange(6)))


def contrastive(negatives="queue", **kw):
  spec = objectives.DataSpec("unused", "pairs", 8, 12)
  return xlco.Contrastive("xlco", 1.0, spec, layer=1, negatives=negatives,
                          queue_size=kw.get("queue_size", 16), momentum=0.9,
                          hidden_size=CFG.hidden_size, pad_id=CFG.pad_id)


def test_xlco_gradient_does_not_reach_the_momentum_encoder_and_state_follows_its_rule():
  graphdef, state = nnx.split(models.MaskedLM(CFG, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(state)
  obj = contrastive()
  obj_state = obj.init_state(params)
  obj_state["queue"] = jnp.asarray(np.random.default_rng(1).normal(size=(16, CFG.hidden_size)),
                                   jnp.float32)
  obj_state["filled"], obj_state["next"] = jnp.int32(8), jnp.int32(8)
  batch = pair_batch()

  def loss_of_momentum(momentum):
    _, loss, _, _ = obj.grads(params, graphdef, batch, None, dict(obj_state, momentum=momentum))
    return loss
  g = jax.grad(loss_of_momentum)(obj_state["momentum"])
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))
  grads, loss, metrics, keys = obj.grads(params, graphdef, batch, None, obj_state)
  assert float(optax_norm(grads["encoder"])) > 0 and not grads["lm_head"]["bias"].any()
  assert metrics["xlco_queue_filled"] == 0.5

  moved = jax.tree.map(lambda p: p + 1.0, params)
  after = obj.update_state(obj_state, moved, keys)
  for k_, q_, k2 in zip(jax.tree.leaves(obj_state["momentum"]),
                        jax.tree.leaves(moved["encoder"]), jax.tree.leaves(after["momentum"])):
    np.testing.assert_allclose(k2, 0.9 * np.asarray(k_) + 0.1 * np.asarray(q_), rtol=1e-6)
  np.testing.assert_array_equal(after["queue"][:8], obj_state["queue"][:8])
  np.testing.assert_array_equal(after["queue"][8:], keys)
  assert int(after["filled"]) == 16 and int(after["next"]) == 0
  # Keys are the momentum encoder's `<s>` at the layer, L2-normalised.
  model = nnx.merge(graphdef, dict(params, encoder=obj_state["momentum"]))
  hidden = model.encoder(jnp.asarray(batch["key_ids"]), output_hidden_states=True).hidden_states[1]
  want = np.asarray(hidden[:, 0]) / np.linalg.norm(hidden[:, 0], axis=-1, keepdims=True)
  np.testing.assert_allclose(keys, want, rtol=2e-5, atol=2e-6)


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


def test_xlco_settings_are_checked():
  defaults = objectives.DataSpec("embedded", "mlm", 16, 32)
  loss_cfg = objectives.LossConfig()
  for kw, match in ((dict(), "XLCo.mixture is not set"),
                    (dict(mixture="m", negatives="all"), "negatives='all' is unknown"),
                    (dict(mixture="m", queue_size=20), "queue_size=20 is not a multiple"),
                    (dict(mixture="m", layer=9), "layer=9 is out of range"),
                    (dict(mixture="m", temperature=0.0), "temperature=0.0 is invalid")):
    with pytest.raises(ConfigError, match=match):
      objectives.XLCo(**kw).build(defaults, loss_cfg, CFG)
  with pytest.raises(ConfigError, match="microbatches=2 does not apply to XLCo"):
    objectives.XLCo(mixture="m").build(defaults, objectives.LossConfig(microbatches=2), CFG)
  with pytest.raises(ConfigError, match="use each objective once"):
    objectives.build([objectives.MLM(), objectives.MLM()], defaults, loss_cfg, CFG)
  with pytest.raises(ConfigError, match="TLM.mixture is not set"):
    objectives.build([objectives.TLM()], defaults, loss_cfg, CFG)
  assert xlco.default_layer(12) == 8 and xlco.default_layer(2) == 1


# ---------------------------------------------------------------------------
# Every objective sharded equals single-device; TLM rows on real pairs.

SHARD_CFG = models.preset("tiny", vocab_size=512, max_len=32, num_layers=1)  # dropout on
# Sharding is decided in HLO; LLVM's optimisation level does not change it (test_sharding.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
SHARD_LOSS = objectives.LossConfig(prediction_rate=0.5)


def all_objectives(queue: bool = True):
  spec = lambda f, l: objectives.DataSpec("unused", f, 8, l)  # noqa: E731
  return (objectives.MaskedLanguageModel("mlm", 1.0, spec("mlm", 16), SHARD_LOSS),
          objectives.MaskedLanguageModel("tlm", 0.5, spec("tlm", 16), SHARD_LOSS),
          xlco.Contrastive("xlco", 2.0, spec("pairs", 12), layer=1,
                           negatives="queue" if queue else "in_batch", queue_size=8,
                           momentum=0.9, hidden_size=SHARD_CFG.hidden_size,
                           pad_id=SHARD_CFG.pad_id),
          rtd.ReplacedTokenDetection("mrtd", 0.5, spec("mlm", 16), SHARD_LOSS, 50.0,
                                     rtd_model.generator_config(SHARD_CFG, 1 / 3)))


def objective_steps(mesh_cfg, objs, steps=2, devices=None):
  """(metrics per step, final train state) of the run's jitted step on `mesh_cfg`."""
  run = train.RunConfig(model=SHARD_CFG, mesh=mesh_cfg, loss=SHARD_LOSS,
                        optim=optimizer.OptimConfig(learning_rate=1e-3, warmup_steps=0))
  mesh = sharding.make_mesh(mesh_cfg, devices)
  setup = train.make_setup(SHARD_CFG, run, mesh, objs)
  batch_sh = sharding.batch_shardings(jax.ShapeDtypeStruct((8, 16), jnp.int32), mesh)
  step_fn, _ = train.compile_steps(setup, batch_sh, objs)
  state = train.fresh_state(setup, SHARD_CFG, run, mesh, None, objs)
  out = []
  with sharding.use_mesh(mesh, run.rules):
    for i in range(steps):
      batch = {"mlm": mlm_batch(i, vocab=512), "tlm": mlm_batch(100 + i, vocab=512),
               "xlco": pair_batch(i, vocab=512), "mrtd": mlm_batch(200 + i, vocab=512)}
      batch = jax.device_put(batch, batch_sh)
      if i == 0:
        step_fn = step_fn.lower(state, batch, jax.random.key(0)).compile(FAST_COMPILE)
      state, m = step_fn(state, batch, jax.random.key(0))
      out.append(jax.device_get(m))
  return out, jax.device_get(state)


@pytest.fixture(scope="module")
def single_device_objectives():
  return objective_steps(sharding.MeshConfig(data=1), all_objectives(), devices=jax.devices()[:1])


@pytest.mark.parametrize("mesh_cfg", [sharding.MeshConfig(data=8),
                                      sharding.MeshConfig(data=1, fsdp=8)], ids=["data", "fsdp"])
def test_every_objective_sharded_equals_single_device(mesh_cfg, single_device_objectives):
  """MLM + TLM + XLCo (the queue full at the second step) + MRTD: losses, gradient norms,
  parameters (the RTD generator's too), the momentum encoder and the queue agree with one
  device."""
  want_metrics, want = single_device_objectives
  got_metrics, got = objective_steps(mesh_cfg, all_objectives(True))
  for w, g in zip(want_metrics, got_metrics):
    for name in ("loss", "mlm_loss", "tlm_loss", "xlco_loss", "mrtd_loss", "mrtd_replaced",
                 "grad_norm"):
      np.testing.assert_allclose(g[name], w[name], rtol=2e-5, err_msg=name)
  assert float(got_metrics[-1]["xlco_queue_filled"]) == 1.0  # negatives were in play
  for w, g in zip(jax.tree.leaves((want.params, want.objectives)),
                  jax.tree.leaves((got.params, got.objectives)), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=5e-6)


def test_in_batch_negatives_need_no_state_and_train_the_key_side():
  metrics, state = objective_steps(sharding.MeshConfig(data=1), all_objectives(False),
                                   devices=jax.devices()[:1])
  assert state.objectives == {} and "xlco_queue_filled" not in metrics[0]
  assert metrics[1]["xlco_loss"] < metrics[0]["xlco_loss"] + 1.0
