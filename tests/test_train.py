"""`python -m polyglot.train` end to end: learning, restoring onto another mesh, damaged and
foreign checkpoints, bad input (SIGKILL, SIGTERM and other faults: test_faults_train.py).

Runs are subprocesses on a 6-language slice of the embedded corpus, so each
test sees what a user sees: exit codes, console lines, files in the workdir.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LANGS = "['eng_Latn', 'fra_Latn', 'swh_Latn', 'rus_Cyrl', 'arb_Arab', 'cmn_Hans']"
BASE = [
    "--gin_file=runs/demo.gin",
    "--gin.TrainConfig.mixture=@embedded_mixture()",
    f"--gin.embedded_mixture.languages={LANGS}",
    "--gin.embedded_mixture.name='embedded_six'",
    "--gin.BATCH_SIZE=8", "--gin.SEQ_LEN=64",
    "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.eval_every=0",
    "--gin.TrainConfig.shuffle_buffer=64",
]


def env(devices: int = 1) -> dict[str, str]:
  e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return e


def train_cmd(workdir, *extra) -> list[str]:
  return [sys.executable, "-m", "polyglot.train", f"--workdir={workdir}", *BASE, *extra]


def run(workdir, *extra, devices: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run(train_cmd(workdir, *extra), cwd=REPO, env=env(devices), timeout=timeout,
                        capture_output=True, text=True)


def losses(workdir) -> dict[int, float]:
  out = {}
  for line in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    if row["split"] == "train":
      out[row["step"]] = row["loss"]
  return out


def final_params(workdir, step):
  from polyglot import checkpoint  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  reader = checkpoint.Checkpointer(str(pathlib.Path(workdir, "checkpoints")), read_only=True)
  meta = reader.read_meta(step)
  from polyglot import models  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  cfg = models.EncoderConfig.from_dict(meta["model_config"])
  abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(
      lambda: models.MaskedLM(cfg, rngs=nnx.Rngs(0)))))
  return jax.tree.leaves(reader.restore(abstract, step=step).params)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """A 12-step run: the reference for resume and sharding tests."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  proc = run(workdir, "--gin.NUM_STEPS=12", "--gin.CheckpointConfig.save_every=6",
             "--gin.TrainConfig.eval_every=6", "--gin.TrainConfig.eval_batches=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_loss_falls_and_the_workdir_is_complete(uninterrupted):
  workdir, proc = uninterrupted
  got = losses(workdir)
  assert sorted(got) == list(range(1, 13))
  rows = [json.loads(l) for l in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()]
  evals = [r for r in rows if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [6, 12] and evals[1]["mlm_loss"] < evals[0]["mlm_loss"]
  assert np.mean([got[s] for s in (10, 11, 12)]) < np.mean([got[s] for s in (1, 2, 3)]) - 0.3
  assert "step 12/12" in proc.stdout and "tok/s" in proc.stdout and "done:" in proc.stdout
  names = {p.name for p in pathlib.Path(workdir, "checkpoints").iterdir()}
  assert {"6", "12"} <= names
  assert pathlib.Path(workdir, "config.gin").read_text().count("NUM_STEPS = 12")
  assert any(pathlib.Path(workdir, "tensorboard").iterdir())


def test_restore_onto_another_mesh(uninterrupted, tmp_path):
  """Checkpoint 6 of a 1-device run continues on fsdp=8 to the same losses."""
  reference, _ = uninterrupted
  import shutil  # pylint: disable=g-import-not-at-top
  (tmp_path / "checkpoints").mkdir()
  shutil.copytree(pathlib.Path(reference, "checkpoints", "6"), tmp_path / "checkpoints" / "6")
  proc = run(tmp_path, "--gin.NUM_STEPS=12", "--gin.CheckpointConfig.save_every=6",
             "--gin.MeshConfig.data=1", "--gin.MeshConfig.fsdp=8", devices=8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  ours, ref = losses(tmp_path), losses(reference)
  np.testing.assert_allclose([ours[s] for s in range(7, 13)], [ref[s] for s in range(7, 13)],
                             rtol=1e-5)


def copy_checkpoints(reference, workdir, *steps):
  import shutil  # pylint: disable=g-import-not-at-top
  for step in steps:
    shutil.copytree(pathlib.Path(reference, "checkpoints", str(step)),
                    pathlib.Path(workdir, "checkpoints", str(step)))


def test_damaged_final_checkpoint_is_moved_aside_and_rewritten(uninterrupted, tmp_path):
  """Step 12 damaged by hand: the same command moves it aside, resumes from step 6 and
  writes step 12 again, equal to the reference's."""
  reference, _ = uninterrupted
  copy_checkpoints(reference, tmp_path, 6, 12)
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(tmp_path / "checkpoints" / "12" / "params")
  proc = run(tmp_path, "--gin.NUM_STEPS=12", "--gin.CheckpointConfig.save_every=6")
  assert proc.returncode == 0, proc.stderr[-3000:]
  warnings = [l for l in proc.stderr.splitlines() if "moved aside" in l]
  assert len(warnings) == 1 and "checkpoint step 12" in warnings[0], proc.stderr[-3000:]
  assert "resumed from step 6" in proc.stderr
  aside = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("12.damaged-")]
  assert len(aside) == 1 and any(aside[0].iterdir())
  for a, b in zip(final_params(tmp_path, 12), final_params(reference, 12)):
    np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_another_model_is_reported_as_such(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  copy_checkpoints(reference, tmp_path, 6)
  proc = run(tmp_path, "--gin.NUM_STEPS=12", "--gin.model_preset.mlp_dim=96")
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "holds another model than this run" in errors[0], errors
  assert "tried steps" not in proc.stderr and "Traceback" not in proc.stderr
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["6"]


@pytest.mark.parametrize("args,message", [
    (["--gin.OptimConfig.no_such_field=1"], "no_such_field"),
    (["--gin_file=runs/missing.gin"], "gin file 'runs/missing.gin' not found"),
    (["--gin.SEQ_LEN=4096"], "exceeds the model's max_len"),
    (["--gin.MeshConfig.data=3"], "does not fit"),
    (["--gin.TrainConfig.mask_rate=0.4"], "prediction_rate=0.3 is too small"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
  proc = run(tmp_path, *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0] and "In call to" not in proc.stderr
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  proc = run(tmp_path, "--gin.NUM_STEPS=40", "--gin.CheckpointConfig.save_every=1",
             "--gin.OptimConfig.learning_rate=1e30", "--gin.OptimConfig.warmup_steps=0",
             "--gin.OptimConfig.end_learning_rate=0.0")
  assert proc.returncode == 1, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "loss is nan" in errors[0]
  import polyglot  # pylint: disable=g-import-not-at-top
  loaded = polyglot.load(str(tmp_path))
  assert loaded.step >= 1 and all(np.isfinite(x).all() for x in final_params(tmp_path, loaded.step))


def test_tensorflow_imports_without_scikit_learn_which_still_imports_afterwards():
  """Keras, which TensorFlow imports, imports scikit-learn for wrappers nothing here uses
  (0.5 s of every start); TensorFlow and tensorflow_text work without it."""
  code = ("import sys\nfrom polyglot import _env\ntf = _env.import_tensorflow()\n"
          "import tensorflow_text\nprint('sklearn' in sys.modules, 'keras' in sys.modules)\n"
          "print(tensorflow_text.WhitespaceTokenizer().tokenize(['a b']).to_list())\n"
          "import sklearn.metrics\nprint(sklearn.metrics.accuracy_score([1, 0], [1, 1]))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env())
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.splitlines() == ["False True", "[[b'a', b'b']]", "0.5"]


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
  """tensorboardX imports PyTorch wherever it is installed (1.5 s of every run's start);
  the writer loads it without, and the events still read back."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  code = ("import sys\nfrom polyglot import metric_writers\n"
          f"w = metric_writers.MetricWriter({str(tmp_path)!r})\n"
          "w.scalars(3, {'loss': 2.5})\nw.close()\nprint('torch' in sys.modules)\n"
          "import torch\nprint(torch.zeros(2).sum().item())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env())
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split() == ["False", "0.0"]  # and torch still imports afterwards
  event_file, = (tmp_path / "tensorboard").iterdir()
  values = [(e.step, v.tag, v.simple_value)
            for e in tf.compat.v1.train.summary_iterator(str(event_file)) for v in e.summary.value]
  assert values == [(3, "train/loss", 2.5)]
