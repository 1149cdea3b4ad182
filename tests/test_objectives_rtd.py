"""Replaced-token detection against independent references: labels and losses in numpy
on a generator made deterministic, gradient paths, ELECTRA's generator sizes, settings.

Sharded = single-device is in test_objectives.py (RTD is among its objectives); exact
resume and starting from an MLM checkpoint in test_train_objectives.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from polyglot import models, objectives, trainer
from polyglot.errors import ConfigError
from polyglot.models import rtd as rtd_model
from polyglot.objectives import rtd

CFG = models.preset("tiny", vocab_size=200, max_len=32)  # dropout on, as pretraining has it
NO_DROPOUT = CFG.replace(dropout_rate=0.0, attention_dropout_rate=0.0)
SPEC = objectives.DataSpec("unused", "mlm", 4, 24)
SAMPLED = 7  # the token the deterministic generator always samples


def rtd_batch(seed=0, b=4, l=24, vocab=CFG.vocab_size):
  """Rows of 2 segments and padding, ~30% of the real tokens selected and masked; some
  selected originals are SAMPLED, so a replacement can restore the original."""
  rng = np.random.default_rng(seed)
  targets = rng.integers(4, vocab - 1, (b, l)).astype(np.int32)
  segment_ids = np.repeat([[1] * 12 + [2] * 8 + [0] * (l - 20)], b, 0).astype(np.int32)
  weights = ((rng.random((b, l)) < 0.3) & (segment_ids > 0)).astype(np.int32)
  chosen = np.argwhere(weights > 0)[::3]
  targets[chosen[:, 0], chosen[:, 1]] = SAMPLED
  targets[segment_ids == 0] = CFG.pad_id
  positions = np.where(segment_ids == 2, np.arange(l) - 12, np.arange(l)) * (segment_ids > 0)
  return dict(input_ids=np.where(weights > 0, CFG.vocab_size - 1, targets).astype(np.int32),
              targets=targets, loss_weights=weights, segment_ids=segment_ids,
              positions=positions.astype(np.int32))


def model_and_objective(prediction_rate, cfg=NO_DROPOUT):
  objective = objectives.MRTD().build(SPEC, objectives.LossConfig(prediction_rate=prediction_rate),
                                      cfg)
  model = trainer.pretraining_model(cfg, [objective], seed=0)
  return model, objective


def log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("prediction_rate", [0.5, None], ids=["selected", "every_position"])
def test_labels_and_losses_against_numpy(prediction_rate):
  """With the generator's bias peaked on one token it samples that token: the corrupted row,
  the labels (sampled != original, so a restored original is 'original') and both losses
  are computed here in numpy from the models' outputs and compared with the objective's."""
  model, objective = model_and_objective(prediction_rate)
  bias = model.generator.lm_head.bias
  bias[...] = jnp.zeros_like(bias[...]).at[SAMPLED].set(1e4)
  batch = rtd_batch()
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  metrics = jax.jit(lambda p: objective.evaluate(p, graphdef, batch))(params)
  _, loss, train_metrics, _ = jax.jit(
      lambda p: objective.grads(p, graphdef, batch, jax.random.key(3), None))(params)

  original, weights = batch["targets"], batch["loss_weights"]
  real = batch["segment_ids"] > 0
  corrupted = np.where(weights > 0, SAMPLED, original)
  labels = (corrupted != original) & real
  assert 0 < labels.sum() < (weights > 0).sum()  # some replacements restored the original

  @jax.jit
  def outputs(p):  # the discriminator's logits on the corrupted row, the generator's
    m = nnx.merge(graphdef, p)
    out = m.encoder(jnp.asarray(corrupted), batch["segment_ids"], batch["positions"])
    embedded = m.encoder.embeddings(batch["input_ids"], batch["segment_ids"],
                                    batch["positions"], None, None)
    gen, _ = m.generator(embedded, batch["segment_ids"], m.encoder.embeddings.word[...])
    return m.rtd_head(out.last_hidden), gen

  z, gen_logits = outputs(params)
  z = np.asarray(z, np.float64)                                                     # [b, l]
  want_detection = -np.where(labels, log_sigmoid(z), log_sigmoid(-z))[real].mean()
  want_accuracy = ((z > 0) == labels)[real].mean()
  g = np.asarray(gen_logits, np.float64)                                            # [b, l, v]
  log_z = np.log(np.exp(g - g.max(-1, keepdims=True)).sum(-1)) + g.max(-1)
  ce = log_z - np.take_along_axis(g, original[..., None], -1)[..., 0]
  want_generator = ce[weights > 0].mean()

  np.testing.assert_allclose(metrics["mrtd_replaced"], labels.sum() / real.sum(), rtol=1e-6)
  np.testing.assert_allclose(metrics["mrtd_detection_loss"], want_detection, rtol=1e-5)
  np.testing.assert_allclose(metrics["mrtd_detection_accuracy"], want_accuracy, rtol=1e-6)
  np.testing.assert_allclose(metrics["mrtd_generator_loss"], want_generator, rtol=1e-5)
  np.testing.assert_allclose(metrics["mrtd_loss"], want_generator + 50 * want_detection,
                             rtol=1e-5)
  np.testing.assert_allclose(loss, metrics["mrtd_loss"], rtol=1e-5)  # dropout off: same loss
  assert float(train_metrics["mrtd_replaced"]) == float(metrics["mrtd_replaced"])


def test_samples_follow_the_generators_softmax():
  """200,000 draws from a fixed 6-token distribution (one token at probability 0) match
  it to 0.005, the edges of the CDF included."""
  logits = jnp.log(jnp.asarray([0.5, 0.2, 0.0, 0.15, 0.1, 0.05]))
  draws = np.asarray(rtd.sample(jax.random.key(0), jnp.broadcast_to(logits, (400, 500, 6))))
  frequencies = np.bincount(draws.ravel(), minlength=6) / draws.size
  np.testing.assert_allclose(frequencies, [0.5, 0.2, 0.0, 0.15, 0.1, 0.05], atol=0.005)
  assert draws.dtype == np.int32


def test_corrupt_writes_samples_at_selected_tokens_only():
  original = np.arange(12, dtype=np.int32).reshape(2, 6)
  predict_at = np.array([[4, 1, 0], [5, 2, 3]], np.int32)
  weights = np.array([[1, 1, 0], [1, 0, 0]], np.int32)  # the last columns: padding of top-k
  sampled = np.array([[90, 91, 92], [93, 94, 95]], np.int32)
  got = np.asarray(rtd.corrupt(original, sampled, weights, predict_at))
  assert got.tolist() == [[0, 91, 2, 3, 90, 5], [6, 7, 8, 9, 10, 93]]
  full = np.asarray(rtd.corrupt(original, original + 50, np.eye(2, 6, dtype=np.int32), None))
  assert full.tolist() == [[50, 1, 2, 3, 4, 5], [6, 57, 8, 9, 10, 11]]


def test_discriminator_loss_reaches_the_generator_only_through_shared_embeddings():
  """Gradients with lambda = 50 and lambda = 0 (the generator's MLM loss alone): the
  generator's own parameters get the same gradient; the discriminator's blocks and head get
  one only from lambda x L_disc; the shared embeddings from both; the MLM head none."""
  model, objective = model_and_objective(0.5, cfg=CFG)
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  selected, _ = objectives.mlm.select_predictions(rtd_batch(1), 0.5)
  selected["original"] = rtd_batch(1)["targets"]
  totals = {"masked": jnp.asarray(float(selected["loss_weights"].sum())),
            "real": jnp.asarray(float((selected["segment_ids"] > 0).sum()))}

  def grads(weight):
    loss = lambda p: rtd.loss_fn(p, selected, jax.random.key(5), graphdef=graphdef,  # noqa: E731
                                 totals=totals, discriminator_weight=weight,
                                 loss_cfg=objective.loss_cfg)
    return jax.device_get(jax.jit(jax.grad(lambda p: loss(p)[0]))(params))

  full, generator_only = grads(50.0), grads(0.0)
  for a, b in zip(jax.tree.leaves(full["generator"]), jax.tree.leaves(generator_only["generator"]),
                  strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  blocks = lambda g: jax.tree.leaves((g["encoder"]["layers"], g["rtd_head"]))  # noqa: E731
  assert all(not np.any(x) for x in blocks(generator_only))
  assert all(np.any(x) for x in blocks(full))
  word = lambda g: g["encoder"]["embeddings"]["word"]  # noqa: E731
  assert np.any(word(generator_only)) and not np.allclose(word(full), word(generator_only))
  assert all(not np.any(x) for x in jax.tree.leaves((full["lm_head"], generator_only["lm_head"])))


def test_generator_sizes_are_electras():
  """ELECTRA (Clark et al., 2020, table 6): Base's generator is H256 A4 I1024 at depth 12
  (1/3), Large's H256 A4 I1024 at depth 24 (1/4)."""
  base = rtd_model.generator_config(models.preset("base"), 1 / 3)
  large = rtd_model.generator_config(models.preset("large"), 1 / 4)
  for gen, depth in ((base, 12), (large, 24)):
    assert (gen.hidden_size, gen.num_heads, gen.mlp_dim, gen.num_layers) == (256, 4, 1024, depth)
  assert rtd_model.generator_config(models.preset("base"), 1 / 3, 4).num_layers == 4
  assert rtd_model.generator_config(models.preset("moe_base_e8"), 1 / 3).moe is None


def test_rtd_flops_count_the_generator_and_the_detection_head():
  """Per token, RTD costs less than MLM with the decoder at every position (HF's) and more
  than MLM with it at the selected ones (the generator's encoder runs too)."""
  cfg, length = models.preset("base"), 512
  rtd_per_token = trainer.objective_flops(
      cfg, objectives.MRTD().build(objectives.DataSpec("m", "mlm", 1, length),
                                   objectives.LossConfig(), cfg)) / length
  assert (trainer.flops_per_token(cfg, length, 0.3) < rtd_per_token
          < trainer.flops_per_token(cfg, length, 1.0))


def test_rtd_settings_are_checked():
  defaults, loss_cfg = objectives.DataSpec("embedded", "mlm", 16, 32), objectives.LossConfig()
  for config, match in ((objectives.MRTD(discriminator_weight=0.0), "discriminator_weight=0.0"),
                        (objectives.MRTD(generator_size=0.0), "generator_size=0.0 is invalid"),
                        (objectives.MRTD(generator_size=1.5), "generator_size=1.5 is invalid"),
                        (objectives.MRTD(generator_layers=0), "generator_layers=0 is invalid"),
                        (objectives.TRTD(), "TRTD.mixture is not set"),
                        (objectives.TRTD(mixture="m", discriminator_weight=-1.0),
                         r"TRTD.discriminator_weight=-1.0")):
    with pytest.raises(ConfigError, match=match):
      objectives.build([config], defaults, loss_cfg, CFG)
  with pytest.raises(ConfigError, match="share one"):
    objectives.build([objectives.MRTD(), objectives.TRTD(mixture="m", generator_size=0.5)],
                     defaults, loss_cfg, CFG)
  built = objectives.build([objectives.MRTD(), objectives.TRTD(mixture="m")], defaults,
                           loss_cfg, CFG)
  assert [o.name for o in built] == ["mrtd", "trtd"] and built[1].data.features == "tlm"
  assert objectives.generator_of(built) == built[0].generator
