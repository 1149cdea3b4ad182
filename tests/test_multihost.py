"""Multi-host `python -m polyglot.train`: 2 processes compute what 1 process computes.

Two processes on 127.0.0.1 (4 CPU devices each, gloo collectives) train with
`TrainConfig.data_shards=2`, so their global batches are those of one
process with 8 devices reading both shards: the per-step losses, the
held-out evaluation (each data shard's held-out batches, `pipeline.heldout_batches`)
and the bitext retrieval (`RunConfig.bitext`, every host embedding
its part of each batch) must agree, and a 2-process checkpoint resumes in 1
process.
The corpus is a folder of 3 languages whose held-out lines are dealt
unevenly to the shards. Single-process runs share a compilation cache, so the
resumed run does not compile again what the reference compiled.
"""
import json
import pathlib
import shutil
import socket
import subprocess

import numpy as np
import pytest

from test_train import REPO, env, losses, train_cmd

LANGS = ("eng_Latn", "swh_Latn", "rus_Cyrl")
TEXT = [
    "--gin.TrainConfig.mixture=@text_directory_mixture()",
    "--gin.TrainConfig.data_shards=2", "--gin.TrainConfig.eval_every=3",
    "--gin.TrainConfig.eval_batches=3", "--gin.CheckpointConfig.save_every=3",
]
TIMEOUT = 600


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(workdir: pathlib.Path, *extra, devices: int,
          process: tuple[int, int, int] | None = None, cache: pathlib.Path | None = None):
  """One `python -m polyglot.train` process, its output in `<workdir>.<id>.log`;
  `process` = (id, count, coordinator port)."""
  flags, environ, index = [], env(devices), 0
  if process:
    index, n, port = process
    flags = ["--multihost", f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}",
             f"--process_id={index}"]
  if cache:
    environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
  log = workdir.with_name(f"{workdir.name}.{index}.log")
  with open(log, "w", encoding="utf-8") as out:  # a file never fills up as a pipe can
    proc = subprocess.Popen(train_cmd(workdir, *TEXT, *extra, *flags), cwd=REPO, env=environ,
                            text=True, stdout=out, stderr=subprocess.STDOUT)
  return proc, log


def finish(started) -> list[str]:
  """Waits for every process (killing all if one hangs); their output, checked for exit 0."""
  try:
    for proc, _ in started:
      proc.wait(timeout=TIMEOUT)
  finally:
    for proc, _ in started:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  outputs = [log.read_text(encoding="utf-8") for _, log in started]
  for (proc, _), out in zip(started, outputs):
    assert proc.returncode == 0, out[-3000:]
  return outputs


def checkpoint_params(workdir, step: int) -> dict[str, np.ndarray]:
  """{path: array} of the parameters in `<workdir>/checkpoints/<step>`, restored in this
  process whatever number of processes wrote them."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from polyglot import checkpoint, models  # pylint: disable=g-import-not-at-top
  reader = checkpoint.Checkpointer(str(pathlib.Path(workdir, "checkpoints")), read_only=True)
  cfg = models.EncoderConfig.from_dict(reader.read_meta(step)["model_config"])
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
                          nnx.to_pure_dict(nnx.state(nnx.eval_shape(
                              lambda: models.MaskedLM(cfg, rngs=nnx.Rngs(0))))))
  params = reader.restore(abstract, step=step).params
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}


def evals(workdir, split: str = "eval") -> dict[int, dict]:
  rows = [json.loads(l) for l in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in rows if r["split"] == split}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  """Each language's embedded text as one long line, then its lines 6 times over. The first
  2 or 3 lines are held out, dealt to the shards by line: the long one to shard 0, so the
  validation data of shard 0 lasts 9 batches and that of shard 1 one batch."""
  from polyglot.data import sources  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("corpus")
  for lang in LANGS:
    lines = list(sources.embedded_corpus().texts[lang])
    (path / f"{lang}.txt").write_text("\n".join([" ".join(lines)] + lines * 6) + "\n",
                                      encoding="utf-8")
  return f"--gin.text_directory_mixture.path='{path}'"


@pytest.fixture(scope="module")
def bitext(tmp_path_factory) -> tuple[str, ...]:
  """Flags of a bitext: 20 lines of 8 words of two languages' embedded text."""
  from polyglot.data import sources  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("bitext")
  for lang in ("swh_Latn", "rus_Cyrl"):
    words = " ".join(sources.embedded_corpus().texts[lang]).split()
    (path / f"{lang}.txt").write_text(
        "\n".join(" ".join(words[i:i + 8]) for i in range(0, 160, 8)) + "\n", "utf-8")
  return ("--gin.RunConfig.bitext=@BitextConfig()",
          f"--gin.BitextConfig.files=['{path / 'swh_Latn.txt'}', '{path / 'rus_Cyrl.txt'}']")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus, bitext, cache):
  """(reference, multihost): 6 steps on 1 process x 8 devices and on 2 processes x 4
  devices, started side by side."""
  reference, multihost = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("mh")
  port = free_port()
  started = [start(reference, corpus, *bitext, "--gin.NUM_STEPS=6", devices=8, cache=cache)]
  started += [start(multihost, corpus, *bitext, "--gin.NUM_STEPS=6", devices=4,
                    process=(i, 2, port)) for i in range(2)]
  finish(started)
  return reference, multihost


def test_two_processes_compute_what_one_computes(runs):
  reference, multihost = runs
  ours, ref = losses(multihost), losses(reference)
  assert sorted(ours) == list(range(1, 7))
  np.testing.assert_allclose([ours[s] for s in range(1, 7)], [ref[s] for s in range(1, 7)],
                             rtol=1e-5)
  ours_eval, ref_eval = evals(multihost), evals(reference)
  assert sorted(ours_eval) == [3, 6] and ours_eval[3]["mlm_loss"] > 0
  for step in (3, 6):
    np.testing.assert_allclose(ours_eval[step]["mlm_loss"], ref_eval[step]["mlm_loss"],
                               rtol=1e-5)
  # Per language: the hosts' held-out rows (9 batches' worth on shard 0, 1 on shard 1,
  # padded to agree) give the one-process table.
  ours_lang, ref_lang = evals(multihost, "eval_languages"), evals(reference, "eval_languages")
  assert sorted(ours_lang) == [3, 6]
  for step in (3, 6):
    names = {k for k in ref_lang[step] if k.endswith("/loss") and "/" not in k[:-5]}
    assert len(names) == len(LANGS), names
    for k in names | {k for k in ref_lang[step] if k.startswith(("group/", "script/"))}:
      np.testing.assert_allclose(ours_lang[step][k], ref_lang[step][k], rtol=1e-5, err_msg=k)
  ours_bitext, ref_bitext = evals(multihost, "eval_bitext"), evals(reference, "eval_bitext")
  assert sorted(ours_bitext) == [3, 6]
  for step in (3, 6):
    keys = sorted(k for k in ref_bitext[step] if "/" in k)
    assert len(keys) == 8, keys  # 4 metrics of the pair and of the average
    np.testing.assert_allclose([ours_bitext[step][k] for k in keys],
                               [ref_bitext[step][k] for k in keys], rtol=1e-6)
  assert {"3", "6"} <= {p.name for p in (multihost / "checkpoints").iterdir()}


def test_process_0_alone_logs_each_step_once(runs):
  """One job, one log: metrics.jsonl holds exactly one row per logged step (log_every=1)
  and evaluation, as the one-process run's does; one TensorBoard event file; the console
  line and the final `done:` come from process 0 only."""
  reference, multihost = runs
  want = sorted([("train", s) for s in range(1, 7)] + [
      (split, s) for split in ("eval", "eval_languages", "eval_bitext") for s in (3, 6)])
  for workdir in (reference, multihost):
    rows = [json.loads(l) for l in pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["split"], r["step"]) for r in rows) == want, workdir
    assert len(list((workdir / "tensorboard").iterdir())) == 1, workdir
  logs = [multihost.with_name(f"{multihost.name}.{i}.log").read_text(encoding="utf-8")
          for i in (0, 1)]
  for step in range(1, 7):
    assert logs[0].count(f"step {step}/6 ") == 1 and f"step {step}/6 " not in logs[1]
  assert logs[0].count("done: ") == 1 and "done: " not in logs[1]


def test_two_processes_end_with_the_parameters_of_one(runs):
  """Every weight after 6 steps on 2 processes x 4 devices equals the 1 x 8 run's, to the
  rounding of cross-device sums taken in another order (gloo across the two processes).
  AdamW divides by sqrt(v) + 1e-6, so an entry whose gradient is near 1e-6 carries that
  rounding into its step: measured, the runs differ by at most 8.8e-8 (4.8e-8 beyond
  rtol 1e-5), against an atol of 1e-6. The learning rates of the 6 steps (warmup capped at
  step 5) add up to 6e-3 and AdamW moves a weight by ~lr per step, so two processes that
  did not share their gradients would differ by ~1e-3."""
  reference, multihost = runs
  ours, ref = checkpoint_params(multihost, 6), checkpoint_params(reference, 6)
  assert sorted(ours) == sorted(ref) and len(ref) > 10
  for path, want in ref.items():
    np.testing.assert_allclose(ours[path], want, rtol=1e-5, atol=1e-6, err_msg=path)
  # Steps 4 to 6 (lr 1.2e-3 + 1.6e-3 + 2e-3) moved the weights far beyond the tolerance.
  at_3 = checkpoint_params(multihost, 3)
  assert max(np.abs(ours[p] - at_3[p]).max() for p in ref) > 1e-3


def test_a_two_process_checkpoint_resumes_in_one_process(runs, tmp_path, corpus, cache):
  """The checkpoint holds each data shard's state, so another process count continues
  the same stream."""
  reference, multihost = runs
  shutil.copytree(multihost / "checkpoints" / "3", tmp_path / "checkpoints" / "3")
  [out] = finish([start(tmp_path, corpus, "--gin.NUM_STEPS=6", devices=8, cache=cache)])
  assert "resumed from step 3" in out and "restarts with seed" not in out
  ours, ref = losses(tmp_path), losses(reference)
  np.testing.assert_allclose([ours[s] for s in (4, 5, 6)], [ref[s] for s in (4, 5, 6)], rtol=1e-5)
  np.testing.assert_allclose(evals(tmp_path)[6]["mlm_loss"], evals(reference)[6]["mlm_loss"],
                             rtol=1e-5)


@pytest.mark.parametrize("shards,batch,processes,message", [
    (3, 8, 2, "TrainConfig.data_shards=3 does not split over 2 processes"),
    (4, 6, 2, "TrainConfig.batch_size=6 does not split into 4 data shards"),
])
def test_bad_shard_counts_are_one_line_errors(shards, batch, processes, message):
  from polyglot import train  # pylint: disable=g-import-not-at-top
  from polyglot.errors import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError) as e:
    train.shard_range(shards, batch, 0, processes)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_processes_read_consecutive_shards():
  from polyglot import train  # pylint: disable=g-import-not-at-top
  assert [list(train.shard_range(4, 8, p, 2)) for p in range(2)] == [[0, 1], [2, 3]]
  assert list(train.shard_range(4, 8, 0, 1)) == [0, 1, 2, 3]


def test_a_host_reading_two_shards_gives_their_rows_in_order_and_resumes():
  """The host side of data_shards: rows of shard 0 then shard 1, each shard with its own
  seed, and a state (with a batch read ahead) that splits into the shards' states."""
  import tasks  # pylint: disable=g-import-not-at-top
  from polyglot.data import pipeline  # pylint: disable=g-import-not-at-top
  tasks.register_embedded("test_multihost_two", languages=["eng_Latn", "swh_Latn"])
  args = dict(length=32, batch_size=2, num_shards=2, shuffle_buffer=8)
  both = pipeline.make_sharded_iterator("test_multihost_two", shards=[0, 1], **args)
  alone = [pipeline.make_sharded_iterator("test_multihost_two", shards=[i], **args)
           for i in (0, 1)]
  first, ahead = next(both), next(both)
  parts = [next(a) for a in alone]
  for k, v in first.items():
    np.testing.assert_array_equal(v, np.concatenate([p[k] for p in parts]))
  assert not np.array_equal(first["loss_weights"][:2], first["loss_weights"][2:])
  state = both.state_with((ahead,))  # `ahead` read but not yet handed out
  assert len(pipeline.split_states(state)) == 2
  resumed = pipeline.make_sharded_iterator("test_multihost_two", shards=[0, 1], **args)
  resumed.set_state(state)
  for want in (ahead, next(both)):
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
