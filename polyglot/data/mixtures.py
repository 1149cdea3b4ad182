"""Tasks and mixtures: one seqio Task per (corpus, language), one Mixture per corpus.

A corpus's languages are mixed with temperature sampling (XLM, Lample and
Conneau 2019, section 3.1): with `n_i` the size of language i,

    q_i = n_i^alpha / sum_j n_j^alpha,

alpha = 0.3 in XLM-R (section 3.1): small languages are up-sampled, large
ones down-sampled. Sizes are in UTF-8 bytes of text (TFDS: stored bytes of
the split; see `sources`); since every
training sequence is full (see `preprocessors`), q_i is also language i's
share of training tokens.

Tasks are named `<corpus>.<language id>` (e.g. `embedded.swh_Latn`), the
mixture `<corpus>`. Registering a corpus again with the same settings returns
the registered mixture; with other settings it is an error.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

from polyglot import _env
from polyglot.data import preprocessors
from polyglot.data import vocab as vocab_lib
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()
import seqio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_ALPHA = 0.3  # XLM-R section 3.1
_REGISTERED: dict[str, tuple[object, seqio.Mixture]] = {}


def check_alpha(alpha: float) -> None:
  if not alpha > 0:
    raise ConfigError(f"sampling alpha={alpha} is invalid: use alpha > 0 (0.3 in XLM-R; "
                      "1 samples in proportion to size, smaller values flatten)")


def sampling_rates(sizes: Mapping[str, float], alpha: float = DEFAULT_ALPHA) -> dict[str, float]:
  """q_i = n_i^alpha / sum_j n_j^alpha, for `sizes` {language: n_i}."""
  check_alpha(alpha)
  bad = {lang: n for lang, n in sizes.items() if not n > 0}
  if not sizes or bad:
    raise DataError(f"cannot mix languages with sizes {bad or 'none'}: every language needs "
                    "some text")
  weights = {lang: float(n) ** alpha for lang, n in sizes.items()}
  total = sum(weights.values())
  return {lang: w / total for lang, w in weights.items()}


def get_provider(name: str) -> seqio.Task | seqio.Mixture:
  """The registered mixture or task `name`; a one-line error listing mixtures otherwise."""
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  raise DataError(f"unknown mixture or task {name!r}; registered mixtures: "
                  f"{sorted(seqio.MixtureRegistry.names())} (import tasks, or register a "
                  "corpus with tasks.register_text_directory / register_tfds)")


def corpus_settings(name: str) -> tuple[dict[str, float], float]:
  """The sizes (by task key, in task order) and alpha `name` was registered with by
  `register_corpus`."""
  if name not in _REGISTERED or name not in seqio.MixtureRegistry.names():
    raise DataError(f"{name!r} is not a corpus mixture registered by polyglot (registered: "
                    f"{sorted(_REGISTERED)}): register it with tasks.register_text_directory "
                    "or register_embedded")
  (_, sizes, alpha, _), mixture = _REGISTERED[name]
  by_key = dict(sizes)
  keys = [t.name[len(name) + 1:] for t in mixture.tasks]
  return {key: by_key[key] for key in keys}, alpha


def task_name(corpus: str, lang: str) -> str:
  return f"{corpus}.{lang}"


def register_corpus(name: str, sources: Mapping[str, seqio.DataSource],
                    sizes: Mapping[str, int], *, alpha: float = DEFAULT_ALPHA,
                    vocabulary: vocab_lib.Vocabulary | None = None,
                    spec: object = None, feature_names: Sequence[str] = ("targets",),
                    task_preprocessors: Sequence[Callable[..., tf.data.Dataset]] = (
                        preprocessors.TEXT_PREPROCESSORS)) -> seqio.Mixture:
  """Registers a Task per key of `sources` and the Mixture `name` over them.

  Keys are language ids, or whatever else a task is made per (a language
  pair: `eng_Latn.swh_Latn`); tasks are named `<name>.<key>`. Each task has
  the int32 features `feature_names` in `vocabulary` and the preprocessors
  `task_preprocessors`. `spec` identifies what was registered (e.g. the
  directory and its files): registering `name` again with an equal spec,
  alpha and vocabulary returns the registered mixture.
  """
  check_alpha(alpha)
  vocabulary = vocabulary or vocab_lib.default_vocabulary()
  key = (spec, tuple(sorted(sizes.items())), alpha, vocabulary)
  if name in _REGISTERED and name in seqio.MixtureRegistry.names():
    registered_key, mixture = _REGISTERED[name]
    if registered_key == key:
      return mixture
    raise ConfigError(f"mixture {name!r} is already registered with other data or settings: "
                      "register this corpus under another name")
  if name in seqio.MixtureRegistry.names() or name in seqio.TaskRegistry.names():
    raise ConfigError(f"{name!r} is already a seqio mixture or task: register this corpus "
                      "under another name")
  rates = sampling_rates(sizes, alpha)
  features = {f: seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32) for f in feature_names}
  for lang, source in sources.items():
    task = task_name(name, lang)
    if task in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(task)  # left by an earlier registration of `name`
    seqio.TaskRegistry.add(task, source=source, output_features=features,
                           preprocessors=list(task_preprocessors),
                           shuffle_buffer_size=None)
  mixture = seqio.MixtureRegistry.add(
      name, [(task_name(name, lang), rates[lang]) for lang in sources],
      # Training streams never end; a finite split (validation) is read to its end.
      sample_fn=functools.partial(tf.data.Dataset.sample_from_datasets,
                                  stop_on_empty_dataset=False))
  _REGISTERED[name] = (key, mixture)
  return mixture
