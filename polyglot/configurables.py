"""What gin may bind: the one module that registers library objects with gin.

Library modules never import gin (T5X's lesson); entry points import this
module and parse gin files. Names are registered without a module prefix,
so gin files read `OptimConfig.learning_rate = 1e-4`.

gin passes any Python literal; every value bound here is checked against
the field's annotation before the object is built (`typed`), so
`--gin.NUM_STEPS=15.5` or `--gin.NUM_STEPS="'abc'"` is a ConfigError naming
`TrainConfig.num_steps`, and a macro bound on the command line must be used
by the configuration (`check_macros`): a misspelt one is an error listing the
known macros, not a run with the defaults.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing

import gin

from polyglot import checkpoint, objectives, optimizer, sharding
from polyglot import train as train_lib
from polyglot.errors import ConfigError
from polyglot.data import schedules
from polyglot.eval import bitext as bitext_lib
from polyglot.eval import languages as languages_lib
from polyglot.eval import hparams as eval_hparams
from polyglot.models import config as model_config

# gin also reads `include 'data/embedded.gin'` as the resource `embedded.gin` of a Python
# package `data` (gin/resource_reader.py), and raises TypeError, not "not found", when that
# package is a plain folder of the working directory (`python -m` puts it on sys.path): a
# `data/` or `models/` folder beside the command (README's `models/xlm-roberta-base`) broke
# every run. polyglot's gin files are files (the working directory, then gin/): only gin's
# file reader stays.
gin.config._FILE_READERS[:] = [  # pylint: disable=protected-access
    (read, exists) for read, exists in gin.config._FILE_READERS if read is open]  # pylint: disable=protected-access


def _expected(hint) -> str:
  """How an error names the annotation `hint` ('an int', 'a float or None', ...)."""
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    return " or ".join(_expected(a) for a in typing.get_args(hint))
  if hint is type(None):
    return "None"
  name = getattr(typing.get_origin(hint) or hint, "__name__", str(hint))
  return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def fits(value, hint) -> bool:
  """Whether `value` is of the annotated type `hint` (an int is a float; a bool is no int).
  Annotations other than the builtin scalars, tuples, lists and unions are not checked."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    return any(fits(value, a) for a in typing.get_args(hint))
  if hint is type(None):
    return value is None
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is str:
    return isinstance(value, str)
  if (origin or hint) in (tuple, list):
    return isinstance(value, (tuple, list))
  if dataclasses.is_dataclass(hint):
    return isinstance(value, hint)
  return True


def typed(fn_or_cls, name: str):
  """`fn_or_cls` behind a check of every keyword argument gin binds against its annotation;
  gin sees the original signature (parameters, defaults)."""
  hints = typing.get_type_hints(fn_or_cls.__init__ if inspect.isclass(fn_or_cls)
                                else fn_or_cls)

  @functools.wraps(fn_or_cls, updated=())
  def build(*args, **kwargs):
    for key, value in kwargs.items():
      if key in hints and not fits(value, hints[key]):
        raise ConfigError(f"{name}.{key}={value!r} is {_expected(type(value))}: use "
                          f"{_expected(hints[key])} (check the gin binding or --gin flag)")
    return fn_or_cls(*args, **kwargs)

  build.__signature__ = inspect.signature(fn_or_cls)
  return build


def _register(obj, name: str | None = None):
  name = name or obj.__name__
  return gin.external_configurable(typed(obj, name), name=name, module="polyglot")


def check_macros(bindings: list[str]) -> None:
  """Every macro that `bindings` (`NAME=VALUE` strings) bind was used by the configuration
  built so far; call after building it."""
  bound = {b.split("=", 1)[0].strip() for b in bindings}
  bound = {b for b in bound if b.isidentifier()}  # macros: no '.', no '/'
  operative = gin.config._OPERATIVE_CONFIG  # pylint: disable=protected-access
  used = {scope for scope, selector in operative if selector == "gin.macro"}
  unused = sorted(bound - used)
  if unused:
    raise ConfigError(f"macro {', '.join(unused)} is bound but not used by this configuration "
                      f"(misspelt?); the macros it uses are {', '.join(sorted(used)) or 'none'}")


EncoderConfig = _register(model_config.EncoderConfig)
MoEConfig = _register(model_config.MoEConfig)
model_preset = _register(model_config.preset, "model_preset")
OptimConfig = _register(optimizer.OptimConfig)
LossConfig = _register(objectives.LossConfig)
LanguageEvalConfig = _register(languages_lib.LanguageEvalConfig)
BitextConfig = _register(bitext_lib.BitextConfig)
MLM = _register(objectives.MLM)
TLM = _register(objectives.TLM)
XLCo = _register(objectives.XLCo)
MRTD = _register(objectives.MRTD)
TRTD = _register(objectives.TRTD)
MeshConfig = _register(sharding.MeshConfig)
MixtureSchedule = _register(schedules.MixtureSchedule)
CheckpointConfig = _register(checkpoint.CheckpointConfig)
TrainConfig = _register(train_lib.TrainConfig)
RunConfig = _register(train_lib.RunConfig)
TaskHparams = _register(eval_hparams.TaskHparams)
RetrievalHparams = _register(eval_hparams.RetrievalHparams)
EvalConfig = _register(eval_hparams.EvalConfig)


@_register
def embedded_mixture(name: str = "embedded_custom", alpha: float = 0.3,
                     languages: list[str] | None = None) -> str:
  """The embedded gflanguages corpus (optionally some languages, another alpha)."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_embedded(name, alpha=alpha, languages=languages).name


def _vocabulary(path: str | None):
  """The SentencePiece model at `path` (XLM-R layout), or None for the embedded default."""
  from polyglot.data.vocab import Vocabulary  # pylint: disable=g-import-not-at-top
  return Vocabulary(path) if path else None


@_register
def text_directory_mixture(path: str = gin.REQUIRED, name: str | None = None,
                           alpha: float = 0.3, vocabulary: str | None = None) -> str:
  """A folder of `<language>.txt[.gz|.xz]` files as a mixture: one gin line for a user."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_text_directory(path, name=name, alpha=alpha,
                                       vocabulary=_vocabulary(vocabulary)).name


@_register
def tokenized_mixture(path: str = gin.REQUIRED, name: str | None = None,
                      alpha: float | None = None, vocabulary: str | None = None) -> str:
  """A corpus tokenized by tools/cache_tasks.py, read from its cache (`alpha` default: the
  cache's)."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_tokenized(path, name=name, alpha=alpha,
                                  vocabulary=_vocabulary(vocabulary)).name


@_register
def mc4_mixture(data_dir: str = gin.REQUIRED, languages: list[str] | None = None,
                alpha: float = 0.3, vocabulary: str | None = None) -> str:
  """mC4 (TFDS `c4/multilingual`) from a prepared TFDS data dir."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_mc4(data_dir, languages=languages, alpha=alpha,
                            vocabulary=_vocabulary(vocabulary)).name


@_register
def bible_mixture(path: str = gin.REQUIRED, name: str = "bible",
                  languages: list[str] | None = None, holdout_books: list[str] | None = None,
                  alpha: float = 0.3, vocabulary: str | None = None) -> str:
  """A verse-aligned bible directory (`<language>.tsv`) as a parallel mixture: a task per
  language pair; `holdout_books` (default REV) form the validation split."""
  import tasks  # pylint: disable=g-import-not-at-top
  kw = {} if holdout_books is None else {"holdout_books": tuple(holdout_books)}
  return tasks.register_bible(path, name=name, languages=languages, alpha=alpha,
                              vocabulary=_vocabulary(vocabulary), **kw).name


@_register
def moses_mixture(path: str = gin.REQUIRED, name: str | None = None, alpha: float = 0.3,
                  vocabulary: str | None = None) -> str:
  """A folder of Moses/OPUS line-aligned files (`<l1>-<l2>.<l1>`, `<l1>-<l2>.<l2>`)."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_moses(path, name=name, alpha=alpha,
                              vocabulary=_vocabulary(vocabulary)).name


@_register
def tsv_pairs_mixture(path: str = gin.REQUIRED, name: str | None = None, alpha: float = 0.3,
                      vocabulary: str | None = None) -> str:
  """A folder of `<l1>-<l2>.tsv` files of `source<TAB>target` lines."""
  import tasks  # pylint: disable=g-import-not-at-top
  return tasks.register_tsv_pairs(path, name=name, alpha=alpha,
                                  vocabulary=_vocabulary(vocabulary)).name


def run_config() -> train_lib.RunConfig:
  """The RunConfig that the parsed gin files describe."""
  return RunConfig()
