"""tools/benchmark.py train/scaling: the measurement runs end to end and reports what it claims."""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def benchmark(*args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device: quick compiles
  return subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), *args],
                        capture_output=True, text=True, check=False, cwd=REPO, env=env)


def test_train_compares_with_hugging_face_on_the_same_batch():
  done = benchmark("train", "--model", "tiny", "--batch-size", "4", "--seq-len", "32",
                   "--steps", "2", "--warmup", "1", "--compare-hf", "--no-record")
  assert done.returncode == 0, done.stderr
  result = json.loads(done.stdout.strip().splitlines()[-1])
  ours, hf = result["polyglot"], result["hf"]
  assert result["batch"] == "4x32" and ours["devices"].endswith("cpu") and ours["mfu"] is None
  assert ours["tokens_per_s"] > 0 and hf["tokens_per_s"] > 0 and ours["compile_s"] > 0
  assert result["ratio"] == round(ours["tokens_per_s"] / hf["tokens_per_s"], 2)
  assert ours["memory_gib"] > 0 and hf["torch"].startswith("2.")
  assert f"{result['ratio']}x" in done.stderr


def test_scaling_runs_each_length_and_expert_count():
  done = benchmark("scaling", "--model", "tiny", "--tokens", "64", "--lengths", "16", "32",
                   "--experts", "4", "--seq-len", "16", "--steps", "1", "--warmup", "1",
                   "--no-record")
  assert done.returncode == 0, done.stderr
  rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
  assert [(r["variant"], r["batch"]) for r in rows] == [
      ("length 16", "4x16"), ("length 32", "2x32"), ("4 experts top-2, capacity, groups of 1024", "4x16")]


def test_bad_mesh_is_one_line_and_exit_1():
  done = benchmark("train", "--model", "tiny", "--mesh", "data=two", "--no-record")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith("error: --mesh='data=two' is invalid")
