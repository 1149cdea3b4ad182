"""Tests run on CPU with 8 host devices; set before JAX is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
