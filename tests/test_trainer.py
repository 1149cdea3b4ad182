"""The pure train step: loss, accumulation, optimizer, FLOPs accounting."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from polyglot import models, optimizer, trainer
from polyglot.errors import ConfigError

CFG = models.preset("tiny", dropout_rate=0.0, attention_dropout_rate=0.0)


def random_batch(seed=0, b=8, l=16):
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, CFG.vocab_size - 1, (b, l)).astype(np.int32)
  return dict(input_ids=ids, targets=np.roll(ids, 1, axis=1),
              loss_weights=(rng.random((b, l)) < 0.3).astype(np.int32),
              segment_ids=np.ones((b, l), np.int32),
              positions=np.tile(np.arange(l, dtype=np.int32), (b, 1)))


def setup(opt_cfg=optimizer.OptimConfig(warmup_steps=0), steps=10):
  graphdef, state = nnx.split(models.MaskedLM(CFG, rngs=nnx.Rngs(0)))
  tx, schedule = optimizer.make_optimizer(opt_cfg, steps)
  return graphdef, nnx.to_pure_dict(state), tx, schedule


def test_mlm_loss_matches_optax_cross_entropy():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 11)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (2, 5)))
  weights = jnp.asarray(rng.random((2, 5)) < 0.5, jnp.float32)
  loss, metrics = trainer.mlm_loss(logits, targets, weights, weights.sum(), 0.0)
  ref = (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights).sum()
  np.testing.assert_allclose(loss, ref / weights.sum(), rtol=1e-6)
  acc = ((jnp.argmax(logits, -1) == targets) * weights).sum() / weights.sum()
  np.testing.assert_allclose(metrics["mlm_accuracy"], acc)


def test_microbatch_accumulation_equals_full_batch():
  graphdef, params, tx, schedule = setup()
  batch, results = random_batch(), {}
  for n in (1, 2, 4):
    step = jax.jit(trainer.bind_train_step(graphdef, tx, schedule, trainer.LossConfig(microbatches=n)))
    results[n] = step(trainer.init_state(params, tx), batch, jax.random.key(0))
  for n in (2, 4):
    for a, b in zip(jax.tree.leaves(results[1][0].params), jax.tree.leaves(results[n][0].params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1][1]["loss"], results[n][1]["loss"], rtol=1e-5)
  with pytest.raises(ConfigError, match="microbatches=3 does not divide"):
    trainer.bind_train_step(graphdef, tx, schedule, trainer.LossConfig(microbatches=3))(
        trainer.init_state(params, tx), batch, jax.random.key(0))


def test_decoder_at_predicted_positions_equals_every_position():
  graphdef, params, tx, schedule = setup()
  batch = random_batch()
  assert batch["loss_weights"].sum(1).max() <= 10  # k = ceil(0.6 x 16) holds every prediction
  results = {}
  for rate in (None, 0.6):
    step = jax.jit(trainer.bind_train_step(graphdef, tx, schedule,
                                           trainer.LossConfig(prediction_rate=rate)))
    results[rate] = step(trainer.init_state(params, tx), batch, jax.random.key(0))
  assert float(results[0.6][1]["mlm_unpredicted"]) == 0.0
  for name in ("loss", "mlm_accuracy", "grad_norm"):
    np.testing.assert_allclose(results[None][1][name], results[0.6][1][name], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(results[None][0].params), jax.tree.leaves(results[0.6][0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_predictions_beyond_the_budget_are_counted_and_the_first_kept():
  batch = random_batch()
  selected, left_out = trainer.select_predictions(batch, 2 / 16)  # k = 2
  per_row = batch["loss_weights"].sum(1)
  assert float(left_out) == np.maximum(per_row - 2, 0).sum() > 0
  first_two = [np.flatnonzero(w)[:2] for w in batch["loss_weights"]]
  for want, at in zip(first_two, np.asarray(selected["predict_at"])):
    assert list(at[:len(want)]) == list(want) and selected["targets"].shape == (8, 2)
  with pytest.raises(ConfigError, match="prediction_rate=0"):
    trainer.LossConfig(prediction_rate=0)


def test_steps_lower_the_loss_and_dropout_follows_the_rng():
  graphdef, params, tx, schedule = setup(optimizer.OptimConfig(learning_rate=3e-3, warmup_steps=0))
  step = jax.jit(trainer.bind_train_step(graphdef, tx, schedule, trainer.LossConfig()))
  state, batch, losses = trainer.init_state(params, tx), random_batch(), []
  for _ in range(10):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 1.0
  assert int(state.step) == 10

  g2, p2 = nnx.split(models.MaskedLM(CFG.replace(dropout_rate=0.1), rngs=nnx.Rngs(0)))
  step2 = jax.jit(trainer.bind_train_step(g2, tx, schedule, trainer.LossConfig()))
  s2 = trainer.init_state(nnx.to_pure_dict(p2), tx)
  a, b, c = (float(step2(s2, batch, jax.random.key(k))[1]["loss"]) for k in (0, 0, 1))
  assert a == b != c


def test_schedule_warmup_and_linear_decay():
  cfg = optimizer.OptimConfig(learning_rate=1e-3, warmup_steps=10, end_learning_rate=1e-4)
  lr = optimizer.learning_rate_schedule(cfg, 110)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)],
                             [0.0, 5e-4, 1e-3, 5.5e-4, 1e-4], rtol=1e-5)
  cos = optimizer.learning_rate_schedule(dataclasses.replace(cfg, schedule="cosine"), 110)
  np.testing.assert_allclose([cos(10), cos(60), cos(110)], [1e-3, 5.5e-4, 1e-4], rtol=1e-5)


def test_weight_decay_skips_biases_and_norms():
  _, params, _, _ = setup()
  mask = optimizer.decay_mask(params)
  flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["['encoder']['embeddings']['word']"]
  assert flat["['encoder']['layers'][0]['attention']['query']['kernel']"]
  assert not flat["['encoder']['layers'][0]['attention']['query']['bias']"]
  assert not flat["['encoder']['layers'][0]['output_norm']['scale']"]
  assert not flat["['lm_head']['bias']"]


@pytest.mark.parametrize("field,value", [("learning_rate", 0.0), ("schedule", "step"),
                                         ("clip_norm", -1.0), ("b2", 1.0)])
def test_bad_optimizer_config_names_the_field(field, value):
  with pytest.raises(ConfigError, match=f"OptimConfig.{field}="):
    optimizer.OptimConfig(**{field: value})


def test_flops_per_token_counts_matmul_params():
  """6 x (params - embedding tables + tied decoder) + attention, for a dense model."""
  cfg = models.preset("tiny")
  abstract = nnx.eval_shape(lambda: models.MaskedLM(cfg, rngs=nnx.Rngs(0)))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  d, v = cfg.hidden_size, cfg.vocab_size
  tables = (v + cfg.num_positions + cfg.type_vocab_size) * d
  norms = 2 * d * (2 * cfg.num_layers + 2)  # LayerNorms and the MLM bias cost no matmul
  matmul = n - tables - norms - v + d * v
  expected = 6 * matmul + 12 * cfg.num_layers * 128 * d
  assert trainer.flops_per_token(cfg, 128) == pytest.approx(expected, rel=0.01)


def test_peak_flops_table():
  class Dev:
    def __init__(self, kind):
      self.device_kind = kind
  assert trainer.peak_flops(Dev("NVIDIA H100 80GB HBM3")) == 989e12
  assert trainer.peak_flops(Dev("TPU v5 lite")) == 197e12
  assert trainer.peak_flops(Dev("TPU v5p")) == 459e12
  assert trainer.peak_flops(Dev("cpu")) is None
