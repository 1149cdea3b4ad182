"""tools/benchmark.py: bad input, and the hardware a row names. The documented train, scaling,
data and profile commands run (shortened) in tests/test_commands.py, which checks what they
report."""
import os
import pathlib
import subprocess
import sys

import hf_testing

REPO = pathlib.Path(__file__).resolve().parents[1]


def benchmark(*args: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device: quick compiles
  return subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), *args],
                        capture_output=True, text=True, check=False, cwd=REPO, env=env)


def test_bad_mesh_is_one_line_and_exit_1():
  done = benchmark("train", "--model", "tiny", "--mesh", "data=two", "--no-record")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith("error: --mesh='data=two' is invalid")


def test_unknown_objective_is_one_line_naming_the_known_ones():
  done = benchmark("train", "--model", "tiny", "--objectives", "mrtd,rtd", "--no-record")
  assert done.returncode == 1
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: --objectives 'mrtd,rtd': unknown ['rtd']"), last
  assert "'mrtd', 'trtd'" in last


def test_cpu_name_tells_generations_apart():
  tool = hf_testing.tool("benchmark")
  zen5 = ("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 26\nflags\t\t: fpu avx2 avx512f\n"
          "\nprocessor\t: 1\nmodel name\t: AMD EPYC\ncpu family\t: 26\nflags\t\t: fpu avx2 avx512f\n")
  assert tool.cpu_name(zen5) == "AMD EPYC (family 26, AVX-512)"
  assert tool.cpu_name("model name\t: AMD EPYC\ncpu family\t: 25\nflags\t: fpu avx2\n") == (
      "AMD EPYC (family 25, AVX2)")
  assert tool.cpu_name("model name\t: Neoverse\n") == "Neoverse"
