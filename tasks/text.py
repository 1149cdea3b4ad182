"""Text-file directories (CC-100, Glot500-c, UDHR layouts) and their tokenized caches: one
call gives a mixture."""
from __future__ import annotations

import os
import re

from polyglot import paths
from polyglot.data import cache, mixtures, sources, tokenized
from polyglot.data.vocab import Vocabulary


def register_text_directory(path: str | os.PathLike, *, name: str | None = None,
                            alpha: float = mixtures.DEFAULT_ALPHA,
                            vocabulary: Vocabulary | None = None,
                            validation_every: int = sources.VALIDATION_EVERY):
  """Registers a Task per `<language>.txt[.gz|.xz]` in `path` (a local directory or a
  URL) and the Mixture `name`.

  `name` defaults to the directory's name (`.../cc100` -> `cc100`).
  """
  mixtures.check_alpha(alpha)
  directory = paths.resolve(path)
  name = name or re.sub(r"\W", "_", paths.Path(directory).name)
  langs, sizes = sources.text_directory_sources(directory, validation_every)
  spec = ("text", tuple(cache.file_key(s.path) for s in langs.values()), validation_every)
  return mixtures.register_corpus(name, langs, sizes, alpha=alpha, vocabulary=vocabulary,
                                  spec=spec)


def register_tokenized(path: str | os.PathLike, *, name: str | None = None,
                       alpha: float | None = None, vocabulary: Vocabulary | None = None):
  """Registers the mixture a tokenized cache holds (`tools/cache_tasks.py` wrote it at
  `path`, a local directory or a URL), read from the cache alone; `alpha` defaults to the
  one it was written with."""
  if alpha is not None:
    mixtures.check_alpha(alpha)
  return tokenized.register(os.fspath(path), name=name, alpha=alpha, vocabulary=vocabulary)
