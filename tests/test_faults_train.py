"""Faults and bad input around `python -m polyglot.train` and its checkpoints.

Each test is named after a fault a user meets: two runs in one workdir, a
full disk, SIGKILL at random points, damaged checkpoints, gin values of the
wrong type, a failing run in a finished workdir. Runs are subprocesses on a
2-language slice of the embedded corpus (seconds each, compiled programs
shared through JAX's persistent cache); bad inputs that fail before training
call `polyglot.train.main` in-process.
"""
import glob
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from faults_testing import assert_one_line_error, assert_unchanged, snapshot

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE = [
    "--gin_file=runs/demo.gin",
    "--gin.TrainConfig.mixture=@embedded_mixture()",
    "--gin.embedded_mixture.languages=['eng_Latn', 'fra_Latn']",
    "--gin.embedded_mixture.name='embedded_two'",
    "--gin.BATCH_SIZE=8", "--gin.SEQ_LEN=64",
    "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.eval_every=0",
    "--gin.TrainConfig.shuffle_buffer=64",
]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


def env(cache) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
              XLA_FLAGS="--xla_force_host_platform_device_count=1",
              JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def train_cmd(workdir, *extra) -> list[str]:
  return [sys.executable, "-m", "polyglot.train", f"--workdir={workdir}", *BASE, *extra]


def run(cache, workdir, *extra, timeout=600) -> subprocess.CompletedProcess:
  return subprocess.run(train_cmd(workdir, *extra), cwd=REPO, env=env(cache), timeout=timeout,
                        capture_output=True, text=True)


def start(cache, workdir, stderr, *extra) -> subprocess.Popen:
  """A run in the background: stdout piped (read it with a StepWatcher), stderr to the open
  file `stderr`."""
  return subprocess.Popen(train_cmd(workdir, *extra), cwd=REPO, env=env(cache), text=True,
                          stdout=subprocess.PIPE, stderr=stderr)


class StepWatcher:
  """Reads a run's stdout in a thread; `wait_for(step)` returns once it logged that step."""

  def __init__(self, proc: subprocess.Popen):
    self.proc, self.step, self.lines = proc, 0, []
    self._changed = threading.Condition()
    self._thread = threading.Thread(target=self._read, daemon=True)
    self._thread.start()

  def _read(self):
    for line in self.proc.stdout:
      with self._changed:
        self.lines.append(line)
        if line.startswith("step "):
          self.step = int(line.split()[1].split("/")[0])
        self._changed.notify_all()
    with self._changed:
      self._changed.notify_all()

  def wait_for(self, step: int, timeout: float = 300) -> bool:
    """True once `step` is logged; False if the run ended first."""
    deadline = time.monotonic() + timeout
    with self._changed:
      while self.step < step and self.proc.poll() is None:
        assert time.monotonic() < deadline, "".join(self.lines)[-2000:]
        self._changed.wait(0.1)
      return self.step >= step

  def stdout(self) -> str:
    self._thread.join(timeout=60)
    return "".join(self.lines)


def metric_rows(workdir) -> list[dict]:
  return [json.loads(line) for line in pathlib.Path(workdir, "metrics.jsonl").read_text()
          .splitlines()]


def train_losses(workdir) -> dict[int, float]:
  rows = [r for r in metric_rows(workdir) if r["split"] == "train"]
  steps = [r["step"] for r in rows]
  assert len(steps) == len(set(steps)), f"duplicate steps in metrics.jsonl: {steps}"
  return {r["step"]: r["loss"] for r in rows}


def params(workdir, step):
  import jax  # pylint: disable=g-import-not-at-top
  import polyglot  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  loaded = polyglot.load(str(workdir), step)
  assert loaded.step == step
  return jax.tree.leaves(nnx.to_pure_dict(nnx.state(loaded.model)))


def committed_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in pathlib.Path(workdir, "checkpoints").iterdir()
                if p.name.isdigit())


# ---- SIGKILL at random points ----

KILL_STEPS = 30


@pytest.fixture(scope="module")
def uninterrupted(compile_cache, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  proc = run(compile_cache, workdir, f"--gin.NUM_STEPS={KILL_STEPS}",
             "--gin.CheckpointConfig.save_every=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_sigkill_at_random_points_resumes_bit_identical(compile_cache, uninterrupted, tmp_path):
  """Four SIGKILLs at random steps (seeded), mostly during asynchronous saves (every 2 steps):
  every step's loss, across all the resumed runs, and the final parameters equal the
  uninterrupted run's, and metrics.jsonl lists each step once."""
  rng = np.random.default_rng(0)
  args = (f"--gin.NUM_STEPS={KILL_STEPS}", "--gin.CheckpointConfig.save_every=2")
  workdir = tmp_path / "run"
  targets = sorted(rng.choice(np.arange(2, KILL_STEPS - 4), size=4, replace=False))
  kills = 0
  for i, target in enumerate(targets):
    with open(tmp_path / f"stderr.{i}", "w") as stderr:
      proc = start(compile_cache, workdir, stderr, *args)
    watcher = StepWatcher(proc)
    if watcher.wait_for(int(target)):
      time.sleep(rng.uniform(0.0, 0.2))
      proc.send_signal(signal.SIGKILL)
      kills += proc.wait() == -signal.SIGKILL
    else:
      proc.wait()
    watcher.stdout()
  assert kills >= 3, kills
  final = run(compile_cache, workdir, *args)
  assert final.returncode == 0, final.stderr[-3000:]
  assert "resumed from step" in final.stderr
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  ours, ref = train_losses(workdir), train_losses(uninterrupted)
  assert sorted(ours) == list(range(1, KILL_STEPS + 1))
  assert ours == ref
  for a, b in zip(params(workdir, KILL_STEPS), params(uninterrupted, KILL_STEPS)):
    np.testing.assert_array_equal(a, b)


# ---- two runs in one workdir; preemption ----

@pytest.fixture(scope="module")
def two_runs(compile_cache, tmp_path_factory):
  """A long run, a second run started in its workdir while it trains, then SIGTERM to the
  first: (workdir, first run's pid, its exit code, stdout, stderr, the second run)."""
  logs = tmp_path_factory.mktemp("two_runs_logs")
  workdir = tmp_path_factory.mktemp("two_runs")
  args = ("--gin.NUM_STEPS=100000", "--gin.CheckpointConfig.save_every=100000")
  with open(logs / "stderr", "w") as stderr:
    first = start(compile_cache, workdir, stderr, *args)
  watcher = StepWatcher(first)
  try:
    assert watcher.wait_for(1)
    second = run(compile_cache, workdir, *args)
    assert first.poll() is None  # the first run was not disturbed
  finally:
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=300)
  return (workdir, first.pid, first.returncode, watcher.stdout(),
          (logs / "stderr").read_text(), second)


def test_two_runs_in_one_workdir(two_runs):
  """The second run exits at once with one line naming the first (pid, host, lock file)."""
  workdir, pid, _, _, _, second = two_runs
  line = assert_one_line_error(second.returncode, second.stderr, f"pid {pid}", "is in use by",
                               "polyglot.lock", expect_code=1)
  assert str(workdir) in line


def test_preempted_run_prints_stopped_not_done(two_runs):
  """SIGTERM: the run saves, says it stopped (not done), exits 0 and releases the lock;
  metrics.jsonl lists each step once."""
  workdir, _, code, out, err, _ = two_runs
  assert code == 0, err[-3000:]
  assert "stopped:" in out and "done:" not in out, out[-2000:]
  assert len(committed_steps(workdir)) == 1
  train_losses(workdir)  # no duplicates
  assert not (workdir / "polyglot.lock").exists()


def test_resume_does_not_duplicate_metrics_lines(tmp_path):
  """A run resumed at step 6 drops the rows of steps 7.. (logged, never saved) and a torn
  last line before it logs them again."""
  from polyglot import metric_writers  # pylint: disable=g-import-not-at-top
  rows = "".join(json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) + "\n"
                 for s in range(1, 10))
  (tmp_path / "metrics.jsonl").write_text(rows + '{"step": 10, "spl')
  writer = metric_writers.MetricWriter(str(tmp_path), resume_step=6)
  for step in range(7, 9):
    writer.scalars(step, {"loss": 0.5})
  writer.close()
  steps = [r["step"] for r in metric_rows(tmp_path)]
  assert steps == list(range(1, 9))
  assert [r["loss"] for r in metric_rows(tmp_path)][5:] == [1.0 / 6, 0.5, 0.5]


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  from polyglot import lock  # pylint: disable=g-import-not-at-top
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  record = {**lock.holder_record(), "pid": int(dead.stdout)}
  (tmp_path / lock.NAME).write_text(json.dumps(record))
  with lock.WorkdirLock(str(tmp_path)):
    held = json.loads((tmp_path / lock.NAME).read_text())
    assert held["pid"] == os.getpid()
  assert any(f"pid {record['pid']}" in r.getMessage() and "took over" in r.getMessage()
             for r in caplog.records)
  assert not (tmp_path / lock.NAME).exists()


def test_lock_is_exclusive_across_processes(tmp_path):
  """A process holding the lock (a real flock) makes the next one fail, naming it; once it
  exits, the lock is free again."""
  from polyglot import lock  # pylint: disable=g-import-not-at-top
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from polyglot import lock\n"
       f"with lock.WorkdirLock({str(tmp_path)!r}):\n  print('held', flush=True); time.sleep(60)"],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lock.WorkdirBusy, match=f"pid {holder.pid} on "):
      lock.WorkdirLock(str(tmp_path)).__enter__()
  finally:
    holder.kill()
    holder.wait()
  with lock.WorkdirLock(str(tmp_path)):  # SIGKILL released it
    pass


def test_lock_in_a_bucket_uses_generation_preconditions(tmp_path, caplog):
  """gs:// against the emulator: a held lock is busy; a dead local holder's lock is taken
  over; another host's lock is busy with the object to delete named."""
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  from polyglot import lock  # pylint: disable=g-import-not-at-top
  with gcs_emulator.emulator(tmp_path / "emulator.log") as url, gcs_emulator.pointed_at(url):
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    workdir = f"gs://{gcs_emulator.BUCKET}/locked"
    blob = storage.Client().bucket(gcs_emulator.BUCKET).blob(f"locked/{lock.NAME}")
    with lock.WorkdirLock(workdir):
      with pytest.raises(lock.WorkdirBusy, match=f"pid {os.getpid()} on "):
        lock.WorkdirLock(workdir).__enter__()
      assert json.loads(blob.download_as_bytes())["pid"] == os.getpid()
    assert not blob.exists()
    blob.upload_from_string(json.dumps({**lock.holder_record(), "pid": 2 ** 22 + 1}))
    with lock.WorkdirLock(workdir):
      assert json.loads(blob.download_as_bytes())["pid"] == os.getpid()
    assert any("taking over" in r.getMessage() for r in caplog.records)
    blob.upload_from_string(json.dumps({**lock.holder_record(), "host": "elsewhere"}))
    with pytest.raises(lock.WorkdirBusy, match=f"on elsewhere .*delete {workdir}/{lock.NAME}"):
      lock.WorkdirLock(workdir).__enter__()


# ---- a full disk ----

@pytest.fixture
def small_disk(tmp_path):
  """A 12 MiB tmpfs (a tiny model's checkpoint is 7 MiB); skipped where mounting fails."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs",
                                          str(mount)], capture_output=True).returncode:
    pytest.skip("mounting a tmpfs needs root")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk(compile_cache, small_disk):
  """A save that fills the disk stops the run with one line naming the step, the cause and
  the step to resume from; after freeing space the same command resumes, the partial
  checkpoint is gone and metrics.jsonl lists each step once."""
  workdir = small_disk / "run"
  args = ("--gin.NUM_STEPS=8", "--gin.CheckpointConfig.save_every=2")
  full = run(compile_cache, workdir, *args)
  line = assert_one_line_error(full.returncode, full.stderr, "saving checkpoint step 4",
                               "No space left on device", "resume from step 2", expect_code=1)
  assert str(workdir) in line
  assert len(full.stderr.splitlines()) < 10, full.stderr[-3000:]
  assert committed_steps(workdir) == [2]
  subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
  resumed = run(compile_cache, workdir, *args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 2" in resumed.stderr
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  assert sorted(train_losses(workdir)) == list(range(1, 9))


# ---- damaged checkpoints outside training ----

@pytest.fixture(scope="module")
def finished(uninterrupted):
  """A finished run: checkpoints 26, 28 and 30 (the three newest are kept)."""
  assert committed_steps(uninterrupted) == [26, 28, 30]
  return uninterrupted


def _write(path, data: bytes):
  pathlib.Path(path).write_bytes(data)


def _truncate_all(pattern):
  for f in glob.glob(pattern):
    with open(f, "r+b") as fh:
      fh.truncate(8)


DAMAGE = {
    "meta garbled": lambda d: _write(d / "meta" / "metadata", b"\x00{not json"),
    "meta deleted": lambda d: shutil.rmtree(d / "meta"),
    "meta not polyglot's": lambda d: _write(d / "meta" / "metadata", b"[1, 2]"),
    "params chunk deleted": lambda d: [os.remove(f) for f in glob.glob(
        str(d / "params" / "ocdbt.process_0" / "d" / "*"))],
    "params truncated": lambda d: _truncate_all(str(d / "params" / "ocdbt.process_0" / "d" / "*")),
    "params manifest garbled": lambda d: _write(d / "params" / "manifest.ocdbt", b"xx"),
    "vocab deleted": lambda d: shutil.rmtree(d / "vocab"),
}


def damaged_copy(finished, tmp_path, damage: str) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  DAMAGE[damage](workdir / "checkpoints" / "30")
  return workdir


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_outside_training(finished, tmp_path, damage):
  """`polyglot.load` names the damaged step and the intact ones, changes nothing, and loads
  an intact step when asked."""
  import polyglot  # pylint: disable=g-import-not-at-top
  from polyglot.errors import CheckpointError  # pylint: disable=g-import-not-at-top
  workdir = damaged_copy(finished, tmp_path, damage)
  before = snapshot(workdir)
  with pytest.raises(CheckpointError, match=r"checkpoint step 30 in .* is damaged \(.+\); the "
                     r"intact steps are \[26, 28\]: pass one as the step \(e\.g\. --step=28\)"
                     ) as caught:
    polyglot.load(str(workdir))
  assert "bound method" not in str(caught.value) and "\n" not in str(caught.value)
  assert polyglot.load(str(workdir), step=28).step == 28
  assert_unchanged(workdir, before)


def test_load_does_not_need_the_data_item(finished, tmp_path):
  import polyglot  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  _write(workdir / "checkpoints" / "30" / "data" / "metadata", b"garbage")
  assert polyglot.load(str(workdir)).step == 30


@pytest.mark.parametrize("command,damage", [
    (["-m", "polyglot.fill_mask", "--checkpoint_dir={w}", "Hello <mask>."],
     "params chunk deleted"),
    (["tools/convert_to_hf.py", "--checkpoint_dir={w}", "--output_dir={w}/hf"], "meta garbled"),
])
def test_damaged_checkpoint_in_a_command_is_one_line(finished, tmp_path, command, damage):
  """The commands as written: one line naming the step and the intact steps, no asyncio or
  TensorStore tracebacks."""
  workdir = damaged_copy(finished, tmp_path, damage)
  before = snapshot(workdir)
  proc = subprocess.run([sys.executable, *(c.format(w=workdir) for c in command)], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                        text=True, timeout=300)
  assert_one_line_error(proc.returncode, proc.stderr, "checkpoint step 30",
                        "intact steps are [26, 28]")
  assert "Event loop is closed" not in proc.stderr and "bound method" not in proc.stderr
  assert_unchanged(workdir, before)


# ---- bad input: one line, exit code, nothing written or lost ----

def main(argv, capsys) -> tuple[int, str]:
  """`python -m polyglot.train ARGV` in this process: (exit code, stderr). The process-wide
  state an entry point sets (root log handlers on this test's captured stderr, the locked
  gin config) is put back for the tests that follow."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import train  # pylint: disable=g-import-not-at-top
  root = logging.getLogger()
  handlers, level = root.handlers[:], root.level
  try:
    code = train.main([*BASE, *argv])
  finally:
    root.handlers[:] = handlers
    root.setLevel(level)
    gin.clear_config()
  return code, capsys.readouterr().err


@pytest.mark.parametrize("binding,message", [
    ("--gin.NUM_STEPS=15.5", "TrainConfig.num_steps=15.5 is a float: use an int"),
    ("--gin.NUM_STEPS='abc'", "TrainConfig.num_steps='abc' is a str: use an int"),
    ("--gin.TrainConfig.seed=True", "TrainConfig.seed=True is a bool: use an int"),
    ("--gin.OptimConfig.learning_rate='1e-3'", "OptimConfig.learning_rate='1e-3' is a str"),
    ("--gin.CheckpointConfig.async_save=1", "CheckpointConfig.async_save=1 is an int: use a bool"),
])
def test_gin_value_of_the_wrong_type(tmp_path, capsys, binding, message):
  code, err = main([f"--workdir={tmp_path / 'run'}", binding], capsys)
  assert_one_line_error(code, err, message, expect_code=2)
  assert not (tmp_path / "run").exists()


def test_misspelled_macro(tmp_path, capsys):
  code, err = main([f"--workdir={tmp_path / 'run'}", "--gin.NUM_STEP=3"], capsys)
  assert_one_line_error(code, err, "macro NUM_STEP is bound but not used",
                        "BATCH_SIZE, LEARNING_RATE, NUM_STEPS, SEQ_LEN", expect_code=2)
  assert not (tmp_path / "run").exists()


def test_bad_flag_is_one_line(tmp_path, capsys):
  code, err = main([f"--workdir={tmp_path / 'run'}", "--num_steps=3"], capsys)
  assert_one_line_error(code, err, "unrecognised arguments ['--num_steps=3']", expect_code=2)


@pytest.mark.parametrize("files,message", [
    ({"swh_Latn.txt": "", "eng_Latn.txt": "Hello world.\n" * 20}, "swh_Latn.txt"),
    ({"xx_nope.txt": "Some text.\n" * 20}, "xx_nope"),
])
def test_data_error_while_gin_builds_the_config(tmp_path, capsys, files, message):
  """An unusable text directory is found while gin builds the mixture: one line, exit 1."""
  texts = tmp_path / "texts"
  texts.mkdir()
  for name, text in files.items():
    (texts / name).write_text(text)
  code, err = main([f"--workdir={tmp_path / 'run'}",
                    "--gin.TrainConfig.mixture=@text_directory_mixture()",
                    f"--gin.text_directory_mixture.path='{texts}'"], capsys)
  assert_one_line_error(code, err, message, expect_code=1)
  assert not (tmp_path / "run").exists()


def test_unwritable_workdir(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  code, err = main([f"--workdir={blocker / 'run'}", "--gin.NUM_STEPS=1"], capsys)
  assert_one_line_error(code, err, f"cannot write the workdir {blocker / 'run'}", expect_code=1)
  assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("argv,message", [
    (["--gin.SEQ_LEN=4096"], "exceeds the model's max_len"),
    (["--gin.MeshConfig.data=3"], "does not fit"),
    (["--gin.BATCH_SIZE=12"], "batch"),
    (["--gin.TrainConfig.init_from='/nonexistent/run'"], "init_from"),
    (["--gin_file=models/small.gin"], "holds another model"),
])
def test_failing_run_leaves_a_finished_run_alone(finished, tmp_path, capsys, argv, message):
  """A rerun of a finished workdir that fails (configuration, mesh, batch, another model)
  changes none of its files: config.gin, metrics.jsonl, checkpoints."""
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  before = snapshot(workdir)
  code, err = main([f"--workdir={workdir}", f"--gin.NUM_STEPS={KILL_STEPS}", *argv], capsys)
  assert_one_line_error(code, err, message)
  assert_unchanged(workdir, before)
  assert sorted(p.name for p in workdir.iterdir()) == sorted(p.name for p in finished.iterdir())


def test_failing_run_does_not_create_the_workdir(tmp_path, capsys):
  code, err = main([f"--workdir={tmp_path / 'run'}", "--gin.MeshConfig.data=3"], capsys)
  assert_one_line_error(code, err, "does not fit", expect_code=2)
  assert not (tmp_path / "run").exists()
