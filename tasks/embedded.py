"""The embedded corpus (gflanguages sample texts): the default mixture, no download."""
from __future__ import annotations

from typing import Sequence

from polyglot.data import mixtures, sources
from polyglot.data.vocab import Vocabulary
from polyglot.errors import DataError

EMBEDDED = "embedded"


def register_embedded(name: str = EMBEDDED, *, alpha: float = mixtures.DEFAULT_ALPHA,
                      languages: Sequence[str] | None = None,
                      vocabulary: Vocabulary | None = None):
  """Registers Tasks `<name>.<language id>` and the Mixture `name` over `languages` (all)."""
  corpus = sources.embedded_corpus()
  chosen = sorted(languages) if languages is not None else sorted(corpus.texts)
  unknown = [lang for lang in chosen if lang not in corpus.texts]
  if unknown or not chosen:
    raise DataError(f"languages {unknown or chosen} are not in the embedded corpus: use ids "
                    f"such as {list(corpus.texts)[:5]} (polyglot.data.sources.embedded_corpus)")
  all_sources, sizes = corpus.sources(), corpus.sizes()
  return mixtures.register_corpus(
      name, {lang: all_sources[lang] for lang in chosen}, {lang: sizes[lang] for lang in chosen},
      alpha=alpha, vocabulary=vocabulary,
      spec=("embedded", sources.embedded_fingerprint(), tuple(chosen)))
