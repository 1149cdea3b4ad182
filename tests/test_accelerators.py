"""Accelerator installs and runs: the `gpu`/`tpu` extras, `make install ACCEL=...`, the
backend log line, and the refusal of a GPU or TPU mesh on a CPU-only process.

The extras are checked against the package index with a pip dry run one level deep
(what jax's own `cuda12`/`tpu` extras add for the installed jax); the test skips when
the index cannot be reached.
"""
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import gin
import jax
import pytest
from packaging.requirements import Requirement

from polyglot import configurables  # noqa: F401  (registers MeshConfig with gin)
from polyglot import sharding
from polyglot.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
GIN = REPO / "gin"
EXTRAS = {"gpu": "cuda12", "tpu": "tpu"}        # our extra -> jax's extra
PLUGINS = {"gpu": "jax-cuda12-plugin", "tpu": "libtpu"}
# pip's debug log when an index page cannot be fetched (no network, DNS, proxy, TLS).
UNREACHABLE = ("Could not fetch URL", "connection error", "NewConnectionError")


def pyproject() -> dict:
  return tomllib.loads((REPO / "pyproject.toml").read_text())


def jax_requirement() -> Requirement:
  reqs = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
  return next(r for r in reqs if r.name == "jax")


def jax_extra_requirements(extra: str) -> list[Requirement]:
  """What the installed jax's `extra` adds (its jaxlib and plugin, pinned to its version)."""
  reqs = [Requirement(r) for r in importlib.metadata.requires("jax") or []]
  return [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": extra})
          and not r.marker.evaluate({"extra": ""})]


def without_marker(req: Requirement) -> str:
  extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
  return f"{req.name}{extras}{req.specifier}"


def train(workdir, *args, devices: int = 8) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-m", "polyglot.train", f"--workdir={workdir}", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def error_lines(stderr: str) -> list[str]:
  return [l for l in stderr.splitlines() if l.startswith("error:")]


# ---------------------------------------------------------------------------
# Extras and Makefile


@pytest.mark.parametrize("ours,theirs", EXTRAS.items())
def test_extras_are_jax_extras_within_the_jax_pin(ours, theirs):
  (req,) = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"][ours]]
  assert req.name == "jax" and req.extras == {theirs}
  assert req.specifier == jax_requirement().specifier
  assert jax.__version__ in req.specifier
  pinned = {r.name: r.specifier for r in jax_extra_requirements(theirs)}
  assert jax.__version__ in pinned["jaxlib"], pinned            # the same jax, no upgrade
  assert PLUGINS[ours] in pinned, f"jax {jax.__version__}[{theirs}] pulls {sorted(pinned)}"
  if ours == "gpu":
    assert jax.__version__ in pinned[PLUGINS[ours]], pinned


@pytest.mark.parametrize("ours", EXTRAS)
def test_extras_resolve_on_the_index(ours, tmp_path):
  """`pip install --dry-run` of what jax's extra adds, against this venv: the plugin exists
  for this Python and platform at the pinned version, and jax itself stays as installed."""
  if os.environ.get("PIP_NO_INDEX"):
    pytest.skip("PIP_NO_INDEX is set: no package index to resolve the extras against")
  reqs = jax_extra_requirements(EXTRAS[ours])
  report, log = tmp_path / "report.json", tmp_path / "pip.log"
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet",
       "--disable-pip-version-check", "--retries", "0", "--timeout", "30",
       "--report", str(report), "--log", str(log), *map(without_marker, reqs)],
      capture_output=True, text=True, timeout=600)
  if proc.returncode:
    debug = log.read_text() if log.exists() else ""
    hits = [l for l in debug.splitlines() if any(m in l for m in UNREACHABLE)]
    if hits:
      pytest.skip(f"package index unreachable: {hits[0].strip()[:200]}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  install = {i["metadata"]["name"].lower(): i["metadata"]["version"]
             for i in json.loads(report.read_text())["install"]}
  assert not {"jax", "jaxlib"} & set(install), install      # the installed jax is kept
  wanted = {r.name: r.specifier for r in reqs}
  assert PLUGINS[ours] in install, install
  assert install[PLUGINS[ours]] in wanted[PLUGINS[ours]], (install, wanted)


def make_n(*args) -> subprocess.CompletedProcess:
  if shutil.which("make") is None:
    pytest.skip("make is not installed")
  return subprocess.run(["make", "-n", "-B", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=60)


def test_make_install_accel_selects_the_extra():
  default = make_n("install")
  assert default.returncode == 0 and 'install -e "."' in default.stdout, default.stdout
  assert "touch .venv/.installed\n" in default.stdout
  for accel in ("gpu", "tpu"):
    out = make_n("install", f"ACCEL={accel}").stdout
    assert f'install -e ".[{accel}]"' in out and f".installed-{accel}" in out, out
  bad = make_n("install", "ACCEL=cuda")
  assert bad.returncode != 0 and "ACCEL=cuda is invalid" in bad.stderr, bad.stderr


# ---------------------------------------------------------------------------
# MeshConfig.platform and the backend line


def test_platform_field_is_validated():
  with pytest.raises(ConfigError, match=r"MeshConfig.platform='cuda' is invalid.*'gpu', 'tpu'"):
    sharding.MeshConfig(platform="cuda")
  assert sharding.MeshConfig(platform="tpu").platform == "tpu"


def test_make_mesh_refuses_devices_of_another_platform():
  for platform in sharding.PLATFORMS:
    with pytest.raises(ConfigError, match=rf"platform='{platform}' but this process sees only "
                       rf"cpu devices: .*ACCEL={platform}.*--gin.MeshConfig.platform=None"):
      sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8, platform=platform))
  assert dict(sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8)).shape)["fsdp"] == 8


def test_describe_devices_names_backend_kinds_and_process():
  assert sharding.describe_devices() == "backend cpu: 8 x cpu (process 0 of 1)"


@pytest.mark.parametrize("name", sorted(p.name for p in (GIN / "mesh").glob("*.gin")))
def test_mesh_files_name_their_platform(name):
  gin.clear_config()
  try:
    gin.parse_config_file(str(GIN / "mesh" / name), skip_unknown=False)
    try:
      platform = gin.query_parameter("MeshConfig.platform")
    except ValueError:
      platform = None
  finally:
    gin.clear_config()
  prefix = name.split("_")[0].removesuffix(".gin")
  assert platform == (prefix if prefix in sharding.PLATFORMS else None), name


# ---------------------------------------------------------------------------
# python -m polyglot.train


def test_gpu_run_on_cpu_is_one_line_exit_2_and_writes_nothing(tmp_path):
  text = tmp_path / "text"
  text.mkdir()
  (text / "sw.txt").write_text("Habari ya dunia.\n" * 20)
  workdir = tmp_path / "w"
  proc = train(workdir, "--gin_file=runs/pretrain_base.gin", f"--gin.TEXT_DIR='{text}'",
               "--gin.VOCAB=None")
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = error_lines(proc.stderr)
  assert len(errors) == 1, proc.stderr[-3000:]
  assert "MeshConfig.platform='gpu'" in errors[0] and "sees only cpu devices" in errors[0]
  assert "make install ACCEL=gpu" in errors[0]
  assert "--gin.MeshConfig.platform=None" in errors[0]
  assert "Traceback" not in proc.stderr
  assert "backend cpu: 8 x cpu (process 0 of 1)" in proc.stderr
  assert not workdir.exists()


def test_platform_none_passes_the_check(tmp_path):
  """A GPU mesh file with the override gets past the platform checks (in `train` and in
  `make_mesh`) to the next check, a sequence longer than the model: cheap, no step runs."""
  proc = train(tmp_path / "w", "--gin_file=runs/demo.gin", "--gin_file=mesh/gpu_8.gin",
               "--gin.MeshConfig.platform=None", "--gin.SEQ_LEN=4096")
  errors = error_lines(proc.stderr)
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
  assert "exceeds the model's max_len" in errors[0] and "platform" not in errors[0]
  assert "INFO polyglot.train: backend cpu: 8 x cpu (process 0 of 1)" in proc.stderr
