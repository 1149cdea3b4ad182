"""The pure train step: loss, accumulation, optimizer, FLOPs accounting."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from polyglot import models, objectives, optimizer, trainer
from polyglot.objectives import mlm
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
  loss, metrics = mlm.mlm_loss(logits, targets, weights, weights.sum(), 0.0)
  ref = (optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights).sum()
  np.testing.assert_allclose(loss, ref / weights.sum(), rtol=1e-6)
  acc = ((jnp.argmax(logits, -1) == targets) * weights).sum() / weights.sum()
  np.testing.assert_allclose(metrics["mlm_accuracy"], acc)


# float32 gradients of one batch computed in another order (the decoder at gathered positions,
# a scan over microbatches) differ by rounding only: measured <= 5e-7 of each leaf's largest
# entry. The floor covers leaves whose gradient is 0 in exact arithmetic (the attention key
# bias: softmax ignores a constant added to every score of a query), measured ~3e-12.
GRAD_RTOL = 1e-5
GRAD_ATOL = 1e-5   # x the leaf's largest |gradient|
GRAD_ATOL_FLOOR = 1e-10


def assert_grads_equal(got, want):
  """Leaf by leaf, every leaf of `want` (same tree), float32 tolerances above."""
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    g, w = np.asarray(g), np.asarray(w)
    assert g.dtype == w.dtype == np.float32, jax.tree_util.keystr(path)
    atol = max(GRAD_ATOL * np.abs(w).max(), GRAD_ATOL_FLOOR)
    np.testing.assert_allclose(g, w, rtol=GRAD_RTOL, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


def trainer_grads(graphdef, params, batch, loss_cfg):
  """The trainer's own gradients: prediction gather and microbatch scan as `train_step` does."""
  return jax.jit(lambda p, b: mlm.grads_and_metrics(p, graphdef, b, None, loss_cfg))(
      params, batch)


@pytest.fixture(scope="module")
def reference():
  """(graphdef, params, batch, grads, metrics): jax.grad of the trainer's `loss_fn` over the
  whole batch, the decoder at every position, normalised by the batch's loss weight; no
  prediction gather and no accumulation."""
  graphdef, params, _, _ = setup()
  batch = random_batch()
  total = jnp.float32(batch["loss_weights"].sum())
  loss = functools.partial(mlm.loss_fn, graphdef=graphdef, total_weight=total,
                           dropout_rng=None, loss_cfg=mlm.LossConfig(prediction_rate=None))
  grads, metrics = jax.jit(jax.grad(lambda p, b: loss(p, batch=b), has_aux=True))(params, batch)
  # Nothing vacuous: the gradient reaches the first layer and the tied embeddings.
  assert float(optax.global_norm(grads)) > 0.1
  assert np.abs(grads["encoder"]["layers"][0]["attention"]["query"]["kernel"]).max() > 1e-6
  assert np.abs(grads["encoder"]["embeddings"]["word"]).max() > 1e-6
  return graphdef, params, batch, grads, metrics


def test_microbatch_gradients_equal_full_batch_gradients(reference):
  """Accumulated over 2 and 4 microbatches, every weight's gradient is the whole batch's.

  The microbatches carry unequal loss weight (4 of them: 5, 11, 10, 6 predictions), so
  normalising each by its own weight, or averaging instead of summing, shows."""
  graphdef, params, batch, ref_grads, ref_metrics = reference
  assert len(set(batch["loss_weights"].reshape(4, -1).sum(1))) > 1
  for n in (2, 4):
    grads, metrics = trainer_grads(graphdef, params, batch,
                                   mlm.LossConfig(microbatches=n, prediction_rate=None))
    assert_grads_equal(grads, ref_grads)
    for name in ("mlm_loss", "mlm_accuracy"):
      np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=1e-6)
  tx, schedule = optimizer.make_optimizer(optimizer.OptimConfig(warmup_steps=0), 10)
  with pytest.raises(ConfigError, match="microbatches=3 does not divide"):
    trainer.bind_train_step(graphdef, tx, schedule,
                            objectives.mlm_only(mlm.LossConfig(microbatches=3)))(
        trainer.init_state(params, tx), {"mlm": batch}, jax.random.key(0))


def test_decoder_at_predicted_positions_gives_every_gradient(reference):
  """The MLM head at the k gathered positions gives the gradients of the head at every
  position. k is the largest number of predictions in a row, so one row fills its budget:
  a gather that dropped or misplaced one position would change the gradients."""
  graphdef, params, batch, ref_grads, ref_metrics = reference
  per_row = batch["loss_weights"].sum(1)
  rate = per_row.max() / batch["loss_weights"].shape[1]  # k = ceil(rate x l) = max per row
  grads, metrics = trainer_grads(graphdef, params, batch, mlm.LossConfig(prediction_rate=rate))
  assert float(metrics["mlm_unpredicted"]) == 0.0
  assert_grads_equal(grads, ref_grads)
  for name in ("mlm_loss", "mlm_accuracy"):
    np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=1e-6)


def test_train_step_applies_the_gradients_of_the_whole_batch(reference):
  """`train_step` (gather, 2 microbatches, clipping, AdamW) reports the reference loss and
  gradient norm and moves every weight as the optimizer does with the reference gradients."""
  graphdef, params, batch, ref_grads, ref_metrics = reference
  tx, schedule = optimizer.make_optimizer(optimizer.OptimConfig(warmup_steps=0), 10)
  step = jax.jit(trainer.bind_train_step(
      graphdef, tx, schedule, objectives.mlm_only(mlm.LossConfig(microbatches=2,
                                                                 prediction_rate=0.5))))
  state, metrics = step(trainer.init_state(params, tx), {"mlm": batch}, jax.random.key(0))
  np.testing.assert_allclose(metrics["loss"], ref_metrics["mlm_loss"], rtol=1e-6)
  np.testing.assert_allclose(metrics["grad_norm"], optax.global_norm(ref_grads), rtol=1e-5)
  updates, _ = tx.update(ref_grads, tx.init(params), params)
  want = optax.apply_updates(params, updates)
  # AdamW's first update is ~lr x sign(g): a check of the wiring, not of the gradients.
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(state.step) == 1


def test_predictions_beyond_the_budget_are_counted_and_the_first_kept():
  batch = random_batch()
  selected, left_out = mlm.select_predictions(batch, 2 / 16)  # k = 2
  per_row = batch["loss_weights"].sum(1)
  assert float(left_out) == np.maximum(per_row - 2, 0).sum() > 0
  first_two = [np.flatnonzero(w)[:2] for w in batch["loss_weights"]]
  for want, at in zip(first_two, np.asarray(selected["predict_at"])):
    assert list(at[:len(want)]) == list(want) and selected["targets"].shape == (8, 2)
  with pytest.raises(ConfigError, match="prediction_rate=0"):
    mlm.LossConfig(prediction_rate=0)


def test_steps_lower_the_loss_and_dropout_follows_the_rng():
  graphdef, params, tx, schedule = setup(optimizer.OptimConfig(learning_rate=3e-3, warmup_steps=0))
  step = jax.jit(trainer.bind_train_step(graphdef, tx, schedule, objectives.mlm_only()))
  state, batch, losses = trainer.init_state(params, tx), {"mlm": random_batch()}, []
  for _ in range(10):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0] - 1.0
  assert int(state.step) == 10

  g2, p2 = nnx.split(models.MaskedLM(CFG.replace(dropout_rate=0.1), rngs=nnx.Rngs(0)))
  step2 = jax.jit(trainer.bind_train_step(g2, tx, schedule, objectives.mlm_only()))
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
