"""Parallel corpora (bible, Moses/OPUS, pair TSV, TFDS translation): a Task per language
pair `<name>.<l1>.<l2>` and a Mixture `name` over the pairs (see `polyglot.data.parallel`).

    register_bible("../shared/data/parallel/bible", languages=["acu", "agr", "swh"])
    register_moses("/data/opus/en-sw", name="opus_en_sw")
    register_tfds_translation("wmt19", {"de-en": ("wmt19_translate/de-en:1.0.0", "train",
                                                  "validation")})
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

from polyglot import paths
from polyglot.data import cache, mixtures, parallel, sources
from polyglot.data.vocab import Vocabulary


def _directory_name(directory: str) -> str:
  return re.sub(r"\W", "_", paths.Path(directory).name)


def register_bible(path: str | os.PathLike, *, name: str = "bible",
                   languages: Sequence[str] | None = None,
                   pairs: Sequence[tuple[str, str]] | None = None,
                   holdout_books: Sequence[str] = parallel.BIBLE_HOLDOUT_BOOKS,
                   alpha: float = mixtures.DEFAULT_ALPHA, vocabulary: Vocabulary | None = None):
  """Registers the verse pairs of a bible directory (`<language>.tsv` of `id<TAB>text`).

  Pairs are `pairs` (two language tags each), else every pair of `languages`
  (tags; every file when None). Validation is the verses of `holdout_books`.
  """
  mixtures.check_alpha(alpha)
  pair_sources, sizes, files = parallel.bible_sources(
      path, languages=languages, pairs=pairs, holdout_books=holdout_books)
  spec = ("bible", tuple(cache.file_key(f) for f in files), tuple(holdout_books))
  return parallel.register_pairs(name, pair_sources, sizes, alpha=alpha, vocabulary=vocabulary,
                                 spec=spec)


def _register_files(name: str, streams: Mapping[str, Sequence[parallel.PairFiles]], alpha: float,
                    vocabulary: Vocabulary | None, validation_every: int, layout: str):
  mixtures.check_alpha(alpha)
  pair_sources, sizes = parallel.file_pair_sources(streams, validation_every)
  keys = tuple(cache.file_key(p) for files in streams.values() for f in files
               for p in (f.source, f.target) if p)
  return parallel.register_pairs(name, pair_sources, sizes, alpha=alpha, vocabulary=vocabulary,
                                 spec=(layout, keys, validation_every))


def register_moses(path: str | os.PathLike, *, name: str | None = None,
                   alpha: float = mixtures.DEFAULT_ALPHA, vocabulary: Vocabulary | None = None,
                   validation_every: int = sources.VALIDATION_EVERY):
  """Registers the `[<prefix>.]<l1>-<l2>.<l1>` / `.<l2>` line-aligned files of `path`.

  `name` defaults to the directory's name.
  """
  directory = paths.resolve(path)
  return _register_files(name or _directory_name(directory),
                         parallel.discover_moses_files(directory), alpha, vocabulary,
                         validation_every, "moses")


def register_tsv_pairs(path: str | os.PathLike, *, name: str | None = None,
                       alpha: float = mixtures.DEFAULT_ALPHA,
                       vocabulary: Vocabulary | None = None,
                       validation_every: int = sources.VALIDATION_EVERY):
  """Registers the `<l1>-<l2>.tsv` files (`source<TAB>target` lines) of `path`.

  `name` defaults to the directory's name.
  """
  directory = paths.resolve(path)
  streams = {pair: [files] for pair, files in parallel.discover_tsv_pair_files(directory).items()}
  return _register_files(name or _directory_name(directory), streams, alpha, vocabulary,
                         validation_every, "tsv_pairs")


def register_tfds_translation(name: str, builders: Mapping[str, tuple[str, str, str | None]], *,
                              data_dir: str | None = None,
                              alpha: float = mixtures.DEFAULT_ALPHA,
                              vocabulary: Vocabulary | None = None):
  """Registers TFDS translation builders, `builders` mapping a pair tag whose two tags
  are the examples' keys to (versioned builder, train split, validation split or None),
  e.g. {"de-en": ("wmt19_translate/de-en:1.0.0", "train", "validation")}.

  Sizes are the train splits' stored bytes from the builders' dataset_info.
  """
  mixtures.check_alpha(alpha)
  pair_sources, sizes = parallel.tfds_translation_sources(builders, data_dir)
  spec = ("tfds_translation", tuple(sorted(builders.items())), data_dir)
  return parallel.register_pairs(name, pair_sources, sizes, alpha=alpha, vocabulary=vocabulary,
                                 spec=spec)
