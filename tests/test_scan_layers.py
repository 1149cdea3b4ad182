"""scan_layers: stacked blocks run by one jax.lax.scan compute what the per-layer loop does.

Same seed, same weights (stacked); same loss, aux and gradients with and
without remat, dense and MoE, on one device and on fsdp=8; the same dropout;
Hugging Face export unstacks and import stacks, bit-identically.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import hf_testing
import polyglot
from polyglot import models, sharding
from polyglot.convert import export, hf
from polyglot.errors import ConfigError, ConversionError
from polyglot.models import encoder
from polyglot.sharding import MeshConfig
from polyglot.objectives import mlm
from test_sharding import FAST_COMPILE, assert_close_trees, mlm_batch

# Two scan steps each: of one dense block, and of a (dense, MoE) group of blocks. The
# tight training capacity drops tokens, so the aux counts are not trivially equal.
NO_DROPOUT = dict(vocab_size=512, max_len=32, dropout_rate=0.0, attention_dropout_rate=0.0)
CONFIGS = {
    "dense": models.preset("tiny", num_layers=2, **NO_DROPOUT),
    "moe": models.preset("moe_tiny", num_layers=4, **NO_DROPOUT,
                         moe=models.MoEConfig(num_experts=4, top_k=2, every_n_layers=2,
                                              group_size=16, capacity_factor_train=0.5)),
}
# Dropless blocks (a scan with a custom VJP) inside the layer scan, and its shard_map under fsdp.
CONFIGS["dropless"] = CONFIGS["moe"].replace(
    moe=dataclasses.replace(CONFIGS["moe"].moe, dispatch="dropless"))
# The attention key bias's gradient is exactly 0 (softmax ignores a shift shared by all keys):
# float32 leaves rounding noise of ~1e-12 there, in any layout.
GRAD_FLOOR = 1e-10
MESHES = {"single": MeshConfig(data=1), "fsdp=8": MeshConfig(data=1, fsdp=8)}


def model(cfg: models.EncoderConfig, scan: bool, seed: int = 0) -> models.MaskedLM:
  return models.MaskedLM(cfg.replace(scan_layers=scan), rngs=nnx.Rngs(seed))


def stacked(params, cfg: models.EncoderConfig):
  """Per-layer parameters (or gradients) in the scanned layout of `cfg`."""
  return hf.to_model_layout(params, cfg.replace(scan_layers=True))


def loss_and_grads(graphdef, state, mesh):
  """((loss, aux), grads) of one training batch through the trainer's `loss_fn`, laid out on
  `mesh` by the default rules, and the state placed there. A dropout key is passed
  (training: MoE uses `capacity_factor_train`); all rates are 0."""
  state_shardings = sharding.state_shardings(state, mesh)
  state = jax.device_put(state, state_shardings)
  batch = mlm_batch(CONFIGS["moe"])
  batch = jax.device_put(batch, sharding.batch_shardings(batch, mesh))
  total = jnp.float32(batch["loss_weights"].sum())

  def f(state, batch):
    return mlm.loss_fn(state, graphdef=graphdef, batch=batch, total_weight=total,
                           dropout_rng=jax.random.key(1),
                           loss_cfg=mlm.LossConfig(prediction_rate=None))

  replicated = jax.sharding.NamedSharding(mesh, P())
  step = jax.jit(jax.value_and_grad(f, has_aux=True),
                 out_shardings=((replicated, replicated), state_shardings),
                 compiler_options=FAST_COMPILE)
  with sharding.use_mesh(mesh):
    return step(state, batch), state


@functools.cache
def results(kind: str, scan: bool, remat: str = "none", mesh: str = "single"):
  """((loss, aux), grads as numpy, state) of one MLM training batch (dropout rates 0)."""
  cfg = CONFIGS[kind].replace(remat=remat)
  graphdef, state = nnx.split(model(cfg, scan))
  devices = jax.devices()[:1] if mesh == "single" else jax.devices()
  ((loss, aux), grads), state = loss_and_grads(graphdef, state,
                                               sharding.make_mesh(MESHES[mesh], devices))
  numpy = lambda t: jax.tree.map(np.asarray, t)  # noqa: E731
  return (float(loss), numpy(aux)), numpy(nnx.to_pure_dict(grads)), state


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_same_seed_gives_the_same_weights_stacked_with_a_layers_axis(kind):
  cfg = CONFIGS[kind]
  scanned_model = model(cfg, True)
  loop, scan = hf.params_of(model(cfg, False)), hf.params_of(scanned_model)
  p, groups = cfg.layer_period, cfg.num_layers // cfg.layer_period
  assert sorted(scan["encoder"]["layers"]) == list(range(p)) and groups == 2
  query = scanned_model.encoder.layers[0].attention.query.kernel
  assert query.shape == (groups, 64, 4, 16)                   # [L / p, d, h, k]
  assert query.get_metadata()["out_sharding"] == ("layers", "embed", "heads", "kv")
  jax.tree.map(np.testing.assert_array_equal, scan, stacked(loop, cfg))
  jax.tree.map(np.testing.assert_array_equal, hf.per_layer(scan, cfg.replace(scan_layers=True)),
               loop)
  if kind == "moe":  # layers 1 and 3 are sparse: the second block of each group
    assert "wi" in scan["encoder"]["layers"][0]["feed_forward"]
    assert scan["encoder"]["layers"][1]["feed_forward"]["experts"]["wi"].shape == (2, 4, 64, 128)


@pytest.mark.parametrize("kind,remat", [("dense", "none"), ("dense", "full"), ("moe", "none"),
                                        ("moe", "dots_with_no_batch_dims_saveable"),
                                        ("dropless", "dots_with_no_batch_dims_saveable")])
def test_scan_gives_the_loops_loss_aux_and_grads(kind, remat):
  (loss, aux), grads, _ = results(kind, True, remat)
  (ref_loss, ref_aux), ref_grads, _ = results(kind, False, remat)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert aux.keys() == ref_aux.keys() == {"mlm_loss", "mlm_accuracy"} | (
      {"load_balance_loss", "router_z_loss", "moe_assignments", "moe_dropped",
       "moe_expert_assignments"} if kind != "dense" else set())
  assert_close_trees(aux, ref_aux)
  if kind != "dense":  # capacity drops, the same tokens in both layouts; dropless none
    assert (float(aux["moe_dropped"]) > 0) == (kind == "moe")
  assert_close_trees(grads, stacked(ref_grads, CONFIGS[kind]), atol=GRAD_FLOOR)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_scan_on_fsdp8_equals_one_device(kind):
  (loss, aux), grads, state = results(kind, True, mesh="fsdp=8")
  (ref_loss, ref_aux), ref_grads, _ = results(kind, True)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert_close_trees(aux, ref_aux)
  assert_close_trees(grads, ref_grads, atol=GRAD_FLOOR)
  # The stacked axis stays whole; each layer's weights are split as unscanned ones are.
  query = state["encoder"]["layers"][0]["attention"]["query"]["kernel"][...]
  assert query.sharding.spec == P(None, "fsdp", "tensor", None)
  assert {s.data.shape for s in query.addressable_shards} == {(query.shape[0], 8, 4, 16)}


def test_hidden_states_and_dropout_equal_the_loop_and_depend_only_on_the_key():
  cfg = CONFIGS["dense"].replace(dropout_rate=0.1, attention_dropout_rate=0.1)
  batch = mlm_batch(cfg)
  ids, segments, positions = (jnp.asarray(batch[k]) for k in
                              ("input_ids", "segment_ids", "positions"))

  def forward(scan: bool):
    graphdef, state = nnx.split(model(cfg, scan).encoder)

    def f(state, rng):
      out = nnx.merge(graphdef, state)(ids, segments, positions, dropout_rng=rng,
                                       output_hidden_states=True)
      return out.last_hidden, out.hidden_states
    return jax.jit(f, compiler_options=FAST_COMPILE), state

  scan, scan_state = forward(True)
  loop, loop_state = forward(False)
  for rng in (None, jax.random.key(0)):
    last, hidden = scan(scan_state, rng)
    ref_last, ref_hidden = loop(loop_state, rng)
    assert len(hidden) == len(ref_hidden) == cfg.num_layers + 1
    np.testing.assert_array_equal(last, hidden[-1])
    assert_close_trees(hidden, ref_hidden)
  again, _ = scan(scan_state, jax.random.key(0))
  other, _ = scan(scan_state, jax.random.key(1))
  np.testing.assert_array_equal(again, scan(scan_state, jax.random.key(0))[0])
  assert not np.allclose(again, other) and not np.allclose(again, scan(scan_state, None)[0])


def test_moe_layers_must_fill_whole_groups():
  with pytest.raises(ConfigError, match=r"EncoderConfig.num_layers=3 is invalid: scan_layers="
                     r"True needs a multiple of moe.every_n_layers=2"):
    models.preset("moe_tiny", num_layers=3, scan_layers=True)
  assert not models.preset("moe_tiny", num_layers=3).scan_layers  # the loop takes any depth
  with pytest.raises(ConfigError, match="EncoderConfig.scan_layers=1 is invalid"):
    models.preset("tiny", scan_layers=1)


def test_deep_presets_scan_and_keep_the_layers_axis_whole():
  assert all(models.preset(n).scan_layers for n in ("large", "xl", "moe_large_e64"))
  assert not models.preset("base").scan_layers  # the layout of HF imports
  mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8))
  _, state, shardings = sharding.abstract_state(
      lambda: models.MaskedLM(models.preset("moe_large_e64"), rngs=nnx.Rngs(0)), mesh)
  experts = state["encoder"]["layers"][1]["feed_forward"]["experts"]["wi"]
  assert experts.shape == (12, 64, 1024, 4096)                # [L / 2, e, d, f]
  assert shardings["encoder"]["layers"][1]["feed_forward"]["experts"]["wi"].get_value().spec == \
      P(None, "expert", "fsdp", "tensor")


def test_unstack_and_stack_are_inverse():
  per_layer = {i: {"w": np.full((2, 3), i, np.float32)} for i in range(6)}
  scan = encoder.stack_layers(per_layer, 2)
  assert scan[1]["w"].shape == (3, 2, 3) and (scan[1]["w"][:, 0, 0] == [1, 3, 5]).all()
  assert jax.tree.map(np.array_equal, encoder.unstack_layers(scan, 2), per_layer) == \
      {i: {"w": True} for i in range(6)}


# ---------------------------------------------------------------------------
# Hugging Face


@pytest.mark.parametrize("head", ["masked_lm", "sequence_classification"])
def test_hf_import_stacks_and_export_unstacks_bit_identically(head):
  cfg = models.preset("tiny", vocab_size=250, max_len=32, num_layers=3)
  scan_cfg = cfg.replace(scan_layers=True)
  labels = 3 if head == "sequence_classification" else None
  state = hf.to_hf(hf_testing.random_params(head, cfg, num_labels=labels), cfg, head)
  params = hf.from_hf(state, scan_cfg, head)
  jax.tree.map(np.testing.assert_array_equal, params, stacked(hf.from_hf(state, cfg, head), cfg))
  back = hf.to_hf(params, scan_cfg, head)
  assert back.keys() == state.keys()
  assert all(np.array_equal(back[k], v) for k, v in state.items())
  with pytest.raises(ConversionError, match=r"not in the scan_layers=True layout \(encoder/"
                     r"layers/\{j\} for j < 1, each \[3, ...\]\)"):
    hf.to_hf(hf.from_hf(state, cfg, head), scan_cfg, head)


def test_scanned_checkpoint_loads_exports_and_equals_hf(tmp_path):
  """polyglot.load builds the scanned model from the stored config; its HF export agrees."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from polyglot.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.default_vocabulary()
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=32, scan_layers=True)
  params = hf_testing.save_checkpoint(tmp_path / "ckpt", "masked_lm", cfg, vocab)
  loaded = polyglot.load(str(tmp_path / "ckpt"))
  assert loaded.config == cfg
  jax.tree.map(np.testing.assert_array_equal, hf.params_of(loaded.model), params)
  out = export.export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")
  theirs = transformers.AutoModelForMaskedLM.from_pretrained(out.directory).eval()
  ids = hf_testing.batch(vocab, ["Habari ya dunia", "Hello world, how are you today?"], 12)
  with torch.no_grad():
    expected = theirs(input_ids=torch.from_numpy(ids).long(),
                      attention_mask=torch.from_numpy(ids != vocab.pad_id).long()).logits
  unscanned = models.MaskedLM(cfg.replace(scan_layers=False), rngs=nnx.Rngs(1))
  hf.load_params(unscanned, hf.per_layer(params, cfg))
  for ours in (loaded.model, unscanned):
    logits, _ = ours(jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), expected.numpy(), atol=1e-4, rtol=0)
