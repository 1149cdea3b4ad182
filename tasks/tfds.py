"""TFDS corpora (mC4, Wikipedia) for users with a prepared TFDS data dir."""
from __future__ import annotations

from typing import Mapping, Sequence

from polyglot.data import mixtures, sources
from polyglot.data.vocab import Vocabulary
from tasks import languages as corpus_languages

# seqio wants TFDS names with a version: these are the installed TFDS builders'.
MC4_BUILDER = "c4/multilingual:3.1.0"
WIKIPEDIA_DATE = "20230601"  # the configs of the installed TFDS wikipedia builder
WIKIPEDIA_VERSION = "1.0.0"


def register_tfds(name: str, builder_splits: Mapping[str, tuple[str, str, str | None]], *,
                  data_dir: str | None = None, alpha: float = mixtures.DEFAULT_ALPHA,
                  vocabulary: Vocabulary | None = None):
  """Registers a Task per language and the Mixture `name` over TFDS builders.

  `builder_splits` maps a language tag to (versioned builder name, train
  split, validation split or None), e.g.
  {"sw": ("c4/multilingual:3.1.0", "sw", "sw-validation")}.
  Sizes are the train splits' stored bytes from the builders' dataset_info.
  """
  mixtures.check_alpha(alpha)
  ids = corpus_languages.language_ids(builder_splits, name)
  langs = {lang: sources.tfds_source(*builder_splits[tag], data_dir=data_dir)
           for lang, tag in ids.items()}
  sizes = {lang: sources.tfds_size(langs[lang], builder_splits[tag][1])
           for lang, tag in ids.items()}
  spec = ("tfds", tuple(sorted(builder_splits.items())), data_dir)
  return mixtures.register_corpus(name, langs, sizes, alpha=alpha, vocabulary=vocabulary,
                                  spec=spec)


def register_mc4(data_dir: str | None = None, *, languages: Sequence[str] | None = None,
                 name: str = "mc4", alpha: float = mixtures.DEFAULT_ALPHA,
                 vocabulary: Vocabulary | None = None):
  """mC4 (TFDS `c4/multilingual`), all its languages or the given mC4 tags (`sw`, `zh`)."""
  tags = languages or corpus_languages.mc4_tags()
  splits = {tag: (MC4_BUILDER, tag, f"{tag}-validation") for tag in tags}
  return register_tfds(name, splits, data_dir=data_dir, alpha=alpha, vocabulary=vocabulary)


def register_wikipedia(languages: Sequence[str], data_dir: str | None = None, *,
                       date: str = WIKIPEDIA_DATE, name: str = "wikipedia",
                       alpha: float = mixtures.DEFAULT_ALPHA,
                       vocabulary: Vocabulary | None = None):
  """Wikipedia (TFDS `wikipedia/<date>.<code>`) in the given wiki codes (`sw`, `zh-yue`).

  Wikipedia dumps have one split; its first 1% is held out for validation.
  """
  splits = {corpus_languages.WIKIPEDIA_CODES.get(code, code):
            (f"wikipedia/{date}.{code}:{WIKIPEDIA_VERSION}", "train[1%:]", "train[:1%]")
            for code in languages}
  return register_tfds(name, splits, data_dir=data_dir, alpha=alpha, vocabulary=vocabulary)
