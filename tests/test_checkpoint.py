"""Orbax checkpoints: exact round trips, other meshes, damaged steps moved aside, misfits."""
import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from polyglot import checkpoint
from polyglot.errors import CheckpointError


def tree(seed=0):
  rng = np.random.default_rng(seed)
  return {"w": rng.normal(size=(8, 16)).astype(np.float32),
          "b": rng.normal(size=(16,)).astype(np.float32)}


def save(ck, step, params, **kw):
  ck.save(step, params=params, opt_state={"count": np.int32(step)}, vocab=b"spm\x00\xff",
          meta={"model_config": {"hidden_size": 16}, "gin_config": "A = 1"},
          data={"0": {"epoch": step}}, **kw)


def shardings(mesh, spec_w, spec_b):
  return {"w": NamedSharding(mesh, spec_w), "b": NamedSharding(mesh, spec_b)}


def test_roundtrip_onto_another_mesh_is_exact(tmp_path):
  devices = np.array(jax.devices()[:8])
  fsdp = Mesh(devices, ("fsdp",))
  params = jax.device_put(tree(), shardings(fsdp, P("fsdp", None), P(None)))
  ck = checkpoint.Checkpointer(str(tmp_path / "checkpoints"),
                               checkpoint.CheckpointConfig(save_every=1))
  save(ck, 5, params)
  ck.wait()
  other = Mesh(devices.reshape(2, 4), ("data", "tensor"))
  target = checkpoint.abstract(params, shardings(other, P(None, "tensor"), P("tensor")))
  restored = checkpoint.Checkpointer(checkpoint.checkpoint_dir(str(tmp_path)),
                                     read_only=True).restore(
      target, {"count": jax.ShapeDtypeStruct((), np.int32)})
  assert restored.step == 5 and restored.vocab == b"spm\x00\xff"
  assert restored.meta["gin_config"] == "A = 1" and restored.data == {"0": {"epoch": 5}}
  assert int(restored.opt_state["count"]) == 5
  assert restored.params["w"].sharding.spec == P(None, "tensor")
  np.testing.assert_array_equal(restored.params["w"], tree()["w"])
  np.testing.assert_array_equal(restored.params["b"], tree()["b"])


def damaged_run(tmp_path):
  """Steps 1 and 2 saved, step 2's parameters then deleted, plus a save that never finished."""
  directory = str(tmp_path / "checkpoints")
  ck = checkpoint.Checkpointer(directory, checkpoint.CheckpointConfig(save_every=1))
  save(ck, 1, tree(1))
  save(ck, 2, tree(2))
  ck.wait()
  ck.close()
  shutil.rmtree(os.path.join(directory, "2", "params"))
  # A save that never finished leaves only a temporary directory: never listed.
  os.makedirs(os.path.join(directory, "3.orbax-checkpoint-tmp-123"))
  return directory


TARGET = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree())


def test_damaged_latest_step_is_moved_aside_and_rewritten(tmp_path, caplog):
  directory = damaged_run(tmp_path)
  writer = checkpoint.Checkpointer(directory, checkpoint.CheckpointConfig(save_every=1))
  assert writer.steps() == [1, 2]
  restored = writer.restore(TARGET)
  assert restored.step == 1
  np.testing.assert_array_equal(restored.params["w"], tree(1)["w"])
  aside = [n for n in os.listdir(directory) if n.startswith("2.damaged-")]
  assert len(aside) == 1 and os.listdir(os.path.join(directory, aside[0]))  # kept, not deleted
  warning = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
  assert len(warning) == 1 and "step 2" in warning[0] and aside[0] in warning[0]
  assert writer.steps() == [1]
  save(writer, 2, tree(3))  # the run goes on and writes step 2 again
  writer.wait()
  again = writer.restore(TARGET)
  assert again.step == 2
  np.testing.assert_array_equal(again.params["w"], tree(3)["w"])


def test_a_reader_never_moves_a_damaged_checkpoint(tmp_path):
  directory = damaged_run(tmp_path)
  before = sorted(os.listdir(directory))
  reader = checkpoint.Checkpointer(directory, read_only=True)
  with pytest.raises(CheckpointError, match=r"step 2 .* is damaged .*intact steps are \[1\]: "
                     r"pass one as the step \(e.g. --step=1\)"):
    reader.restore(TARGET)
  with pytest.raises(CheckpointError, match="step 2 .* is damaged"):
    reader.restore(TARGET, step=2)
  assert sorted(os.listdir(directory)) == before
  assert reader.restore(TARGET, step=1).step == 1


def test_another_model_is_reported_as_such_not_as_damage(tmp_path):
  directory = str(tmp_path / "checkpoints")
  ck = checkpoint.Checkpointer(directory, checkpoint.CheckpointConfig(save_every=1))
  save(ck, 1, tree(1))
  ck.wait()
  wider = {"w": jax.ShapeDtypeStruct((8, 32), np.float32), "b": TARGET["b"]}
  with pytest.raises(CheckpointError, match=r"holds another model than this run \(params: "
                     r"w has shape \(8, 16\) there, \(8, 32\) here\)"):
    ck.restore(wider)
  extra = {**TARGET, "g": jax.ShapeDtypeStruct((4,), np.float32)}
  with pytest.raises(CheckpointError, match=r"it has no g\b"):
    ck.restore(extra)
  assert ck.steps() == [1] and os.listdir(directory) == ["1"]


def test_empty_directory_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    checkpoint.Checkpointer(str(tmp_path / "none")).restore({})


def test_retention_keeps_last_k_plus_every_m(tmp_path):
  cfg = checkpoint.CheckpointConfig(save_every=1, keep_last=2, keep_every=4, async_save=False)
  ck = checkpoint.Checkpointer(str(tmp_path / "c"), cfg)
  for step in range(1, 10):
    save(ck, step, tree())
  ck.wait()
  assert ck.steps() == [4, 8, 9]


def test_resolve_step_is_newest_or_named(tmp_path):
  ck = checkpoint.Checkpointer(str(tmp_path / "c"), checkpoint.CheckpointConfig(save_every=1))
  with pytest.raises(CheckpointError, match="no checkpoint in"):
    ck.resolve_step()
  save(ck, 3, tree())
  save(ck, 7, tree())
  ck.wait()
  assert ck.resolve_step() == 7 and ck.resolve_step(3) == 3
  with pytest.raises(CheckpointError, match=r"no step 5 .*available steps: \[3, 7\]"):
    ck.resolve_step(5)


def test_lists_and_optimizer_states_restore_and_are_checked(tmp_path):
  """Key paths of list entries (`layers/0`) and optax state attributes (`count`) are spelled
  one way in a tree and in Orbax's metadata: such a state restores, and a misfit is named."""
  import optax  # pylint: disable=g-import-not-at-top
  params = {"layers": [tree(1), tree(2)]}
  opt_state = optax.adamw(1e-3).init(params)
  ck = checkpoint.Checkpointer(str(tmp_path / "c"), checkpoint.CheckpointConfig(save_every=1))
  ck.save(1, params=params, opt_state=opt_state, vocab=b"v", meta={}, data=None)
  ck.wait()
  spec = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                                t)
  restored = checkpoint.Checkpointer(str(tmp_path / "c"), read_only=True).restore(
      spec(params), spec(opt_state))
  np.testing.assert_array_equal(restored.params["layers"][1]["w"], tree(2)["w"])
  assert int(restored.opt_state[0].count) == 0
  three = {"layers": [tree(1), tree(2), tree(3)]}
  with pytest.raises(CheckpointError, match="it has no layers/2/b"):
    ck.restore(spec(three), spec(optax.adamw(1e-3).init(three)))
