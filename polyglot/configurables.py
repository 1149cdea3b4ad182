"""What gin may bind: the one module that registers library objects with gin.

Library modules never import gin (T5X's lesson); entry points import this
module and parse gin files. Names are registered without a module prefix,
so gin files read `OptimConfig.learning_rate = 1e-4`.
"""
from __future__ import annotations

import gin

from polyglot import checkpoint, optimizer, sharding, trainer
from polyglot import train as train_lib
from polyglot.eval.xtreme import hparams as xtreme_hparams
from polyglot.models import config as model_config

# gin also reads `include 'data/embedded.gin'` as the resource `embedded.gin` of a Python
# package `data` (gin/resource_reader.py), and raises TypeError, not "not found", when that
# package is a plain folder of the working directory (`python -m` puts it on sys.path): a
# `data/` or `models/` folder beside the command (README's `models/xlm-roberta-base`) broke
# every run. polyglot's gin files are files (the working directory, then gin/): only gin's
# file reader stays.
gin.config._FILE_READERS[:] = [  # pylint: disable=protected-access
    (read, exists) for read, exists in gin.config._FILE_READERS if read is open]  # pylint: disable=protected-access


def _register(obj, name: str | None = None):
  return gin.external_configurable(obj, name=name, module="polyglot")


EncoderConfig = _register(model_config.EncoderConfig)
MoEConfig = _register(model_config.MoEConfig)
model_preset = _register(model_config.preset, "model_preset")
OptimConfig = _register(optimizer.OptimConfig)
LossConfig = _register(trainer.LossConfig)
MeshConfig = _register(sharding.MeshConfig)
CheckpointConfig = _register(checkpoint.CheckpointConfig)
TrainConfig = _register(train_lib.TrainConfig)
RunConfig = _register(train_lib.RunConfig)
TaskHparams = _register(xtreme_hparams.TaskHparams)
RetrievalHparams = _register(xtreme_hparams.RetrievalHparams)
XtremeConfig = _register(xtreme_hparams.XtremeConfig)


@gin.configurable(module="polyglot")
def embedded_mixture(name: str = "embedded_custom", alpha: float = 0.3,
                     languages: list[str] | None = None) -> str:
  """The embedded gflanguages corpus (optionally some languages, another alpha)."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_embedded(name, alpha=alpha, languages=languages).name


def _vocabulary(path: str | None):
  """The SentencePiece model at `path` (XLM-R layout), or None for the embedded default."""
  from polyglot.data.vocab import Vocabulary  # pylint: disable=g-import-not-at-top
  return Vocabulary(path) if path else None


@gin.configurable(module="polyglot")
def text_directory_mixture(path: str = gin.REQUIRED, name: str | None = None,
                           alpha: float = 0.3, vocabulary: str | None = None) -> str:
  """A folder of `<language>.txt[.gz|.xz]` files as a mixture: one gin line for a user."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_text_directory(path, name=name, alpha=alpha,
                                       vocabulary=_vocabulary(vocabulary)).name


@gin.configurable(module="polyglot")
def mc4_mixture(data_dir: str = gin.REQUIRED, languages: list[str] | None = None,
                alpha: float = 0.3, vocabulary: str | None = None) -> str:
  """mC4 (TFDS `c4/multilingual`) from a prepared TFDS data dir."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_mc4(data_dir, languages=languages, alpha=alpha,
                            vocabulary=_vocabulary(vocabulary)).name


def run_config() -> train_lib.RunConfig:
  """The RunConfig that the parsed gin files describe."""
  return RunConfig()
