"""Tests run on CPU with 8 host devices; set before JAX is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the suite: the pytest workers and every command they
# start load what another test compiled (a train step of the demo model compiles in ~10 s).
# Entries are keyed on the program, the flags and the JAX version; LRU-capped, and the cap
# turns on JAX's file lock, so concurrent processes never read a half-written entry. Programs
# that compile in under 0.25 s are not stored: every store scans the folder, and eager ops
# alone would make thousands of entries (measured: a test 3.7x slower with them).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax"))
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.25")

import polyglot  # noqa: E402,F401  (silences TensorFlow before any test imports it)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def vocab():
  """The default 8000-id vocabulary (trained on the embedded corpus once, then cached)."""
  from polyglot.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  return vocab_lib.default_vocabulary()


@pytest.fixture(scope="session")
def corpus():
  """The embedded gflanguages corpus."""
  from polyglot.data import sources  # pylint: disable=g-import-not-at-top
  return sources.embedded_corpus()
