"""polyglot: JAX-native training of massively multilingual encoders."""
from polyglot import _env  # noqa: F401  (must precede TensorFlow and JAX imports)

__version__ = "0.1.0"
