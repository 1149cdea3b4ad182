"""Tests run on CPU with 8 host devices; set before JAX is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import polyglot  # noqa: E402,F401  (silences TensorFlow before any test imports it)
