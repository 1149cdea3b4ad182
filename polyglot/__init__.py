"""polyglot: JAX-native training of massively multilingual encoders."""
from polyglot import _env  # noqa: F401  (must precede TensorFlow and JAX imports)

__version__ = "0.1.0"


def load(checkpoint_dir: str, step: int | None = None, sharding=None):
  """Model, vocabulary and config from a checkpoint (see `polyglot.api.load`)."""
  from polyglot import api  # pylint: disable=g-import-not-at-top  (keeps `import polyglot` light)
  return api.load(checkpoint_dir, step, sharding)
