"""Parallel corpora as seqio tasks: sentence pairs for TLM and contrastive objectives.

Tasks and features. One Task per language pair, `<corpus>.<l1>.<l2>` with
language ids in alphabetical order (`bible.acu_Latn.agr_Latn`; seqio's task
names allow no `-`); its source side is l1, its target side l2. A source
yields `{"source": tf.string, "target": tf.string}` scalars in a fixed
order; the task preprocessor
`tokenize_pairs` makes them `{"source": int32 [n], "target": int32 [m]}`
SentencePiece ids without special tokens, in the task's vocabulary (the
feature converters add `<s>`/`</s>` and pack). Splits: `train`, and
`validation` where pairs are held out.

Mixing. The Mixture `<corpus>` samples pairs with the temperature rule of
`mixtures` (XLM section 3.1), n_i being the UTF-8 bytes of both sides of pair
i's training split. The pair, not the language, is the unit, because an
example belongs to both of its languages: XLM also keeps one parallel dataset
per pair (`data["para"][(l1, l2)]` in its code) and its TLM steps name pairs.
A pair with little text is up-sampled like a language with little text.

Sharding. A source lists one shard per split, so that hosts share its pairs
by position (`Dataset.shard` in `pipeline._read_task`), as for the text files
of `sources`; a TFDS source keeps TFDS's files as shards.

Layouts (every path local or `gs://`; readers in `bitext`):
- bible: a directory of `<language>.tsv` files of `verse_id<TAB>text`
  (`/work/shared/data/parallel/bible`, README section 7); a pair is the
  verses whose id is in both files (`bitext.join_on_ids`), in l1's file
  order. Validation is every verse of the held-out books (Revelation by
  default): whole books, so that retrieval on them is on text never trained
  on. Text is never copied per pair: each language's verses are one string
  tensor, and a pair's dataset is its row indices (int32, made with the
  dataset) mapped to a gather from both tensors. Measured on all 37
  languages (663 pairs): registering takes 0.8 s and 64 MB (the files hold
  48 MB); building every pair's tokenized dataset and mixing them into one
  iterator adds 0.6 GB more, 1 MB per pair, about half of it the tokenizer
  map every task has (tf.data's cost per pipeline). Pairs of languages with no
  common training verse (3 of the 666) are left out when pairs are implied.
- Moses/OPUS: a directory of `[<prefix>.]<l1>-<l2>.<l1>` and `.<l2>` files
  (`en-sw.en` + `en-sw.sw`, `Tatoeba.en-sw.en` + `Tatoeba.en-sw.sw`; other
  files such as OPUS's `.xml` or `README` are ignored); line i of one file
  translates line i of the other. Files of several prefixes for one pair are
  read one after the other. Streamed with `tf.data.TextLineDataset`.
- TSV: a directory of `<l1>-<l2>.tsv` files of `source<TAB>target` lines
  (other `.tsv` files without a `-` in their name are ignored). Streamed.
- TFDS: a translation builder whose examples hold one text per language tag
  (`wmt19_translate/de-en`: `{"de": ..., "en": ...}`); sizes from its
  dataset_info.

Moses and TSV files are checked once at registration (line counts, empty
sides, UTF-8: a one-line `DataError` naming file and line) and counted; the
counts are cached under `$POLYGLOT_CACHE` keyed by path, size and mtime like
`sources.text_stats`. Their validation split is the first
`sources.holdout_lines(n, validation_every)` pairs of each file (5%).
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import itertools
import os
from typing import Iterator, Mapping, Sequence

import numpy as np

from polyglot import _env, paths
from polyglot.data import bitext, cache, mixtures, sources
from polyglot.data import languages as lang_lib
from polyglot.data import vocab as vocab_lib
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()
import seqio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

FEATURES = ("source", "target")
BIBLE_HOLDOUT_BOOKS = ("REV",)  # Revelation, the New Testament's last book
_BIBLE_MANIFEST = "MANIFEST.tsv"
_STATS_CACHE = "parallel_stats.json"
_STATS_VERSION = 1  # bump when `PairStats` changes meaning


def pair_name(lang_1: str, lang_2: str) -> str:
  """The task suffix of a pair of language ids: `eng_Latn.swh_Latn` (ids in order)."""
  return ".".join(sorted((lang_1, lang_2)))


def _language_id(tag: str, where: str) -> str:
  try:
    return lang_lib.resolve(tag).id
  except DataError as e:
    raise DataError(f"{where}: {e}") from None


def _is_language_tag(tag: str) -> bool:
  try:
    lang_lib.resolve(tag)
  except DataError:
    return False
  return True


def split_pair_tag(tag: str, where: str) -> tuple[str, str]:
  """`en-sw` -> (`en`, `sw`): the one split at a `-` whose sides are both language tags
  (`en-zh-Hans` -> (`en`, `zh-Hans`))."""
  splits = []
  for i, char in enumerate(tag):
    if char == "-":
      a, b = tag[:i], tag[i + 1:]
      if _is_language_tag(a) and _is_language_tag(b):
        splits.append((a, b))
  if len(splits) != 1:
    problem = "no" if not splits else "more than one"
    raise DataError(f"{where}: {tag!r} has {problem} reading as <language>-<language>: name "
                    "the pair by two language tags, e.g. en-sw or eng_Latn-swh_Latn")
  return splits[0]


def _ordered_ids(tag_a: str, tag_b: str, where: str) -> tuple[str, str, bool]:
  """(l1, l2, swapped): the language ids of two tags in order; swapped when `tag_a` is l2."""
  a, b = _language_id(tag_a, where), _language_id(tag_b, where)
  if a == b:
    raise DataError(f"{where}: both sides are {a}: a pair needs two languages")
  return min(a, b), max(a, b), a > b


class PairSource(seqio.DataSource):
  """Sentence pairs {"source": tf.string, "target": tf.string} in a fixed order.

  One shard per split: hosts share the pairs by position (see the module docstring).
  """

  def __init__(self, name: str, counts: Mapping[str, int]):
    self._name = name
    counts = {split: n for split, n in counts.items() if n}
    super().__init__(splits=tuple(counts), num_input_examples=counts, caching_permitted=False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  @abc.abstractmethod
  def _pairs(self, split: str) -> tf.data.Dataset:
    """The pairs of `split`, in order."""

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    # Shuffling happens after mixing; sharding by position after this (one shard listed).
    del shuffle, seed, shard_info, sequence_length, use_cached, num_epochs
    if split not in self.splits:
      raise DataError(f"{self} has no {split!r} split (it has {list(self.splits)}): none of "
                      "its pairs is held out")
    return self._pairs(split)

  def __str__(self) -> str:
    return f"{type(self).__name__}({self._name})"


# Bible layout: one `id<TAB>text` file per language, joined on verse ids.
@dataclasses.dataclass(frozen=True, eq=False)
class BibleLanguage:
  """One translation, its verses numbered by the corpus-wide verse index g in [0, G)."""
  path: str
  texts: tf.Tensor        # string [n]: the file's verses, in file order
  num_bytes: np.ndarray   # int64 [n]: UTF-8 bytes of each verse
  verse: np.ndarray       # int32 [n]: g of each verse
  row: np.ndarray         # int32 [G]: index in `texts` of verse g, -1 where the file lacks it


def bible_rows(a: BibleLanguage, b: BibleLanguage, held_out: np.ndarray, validation: bool
               ) -> tuple[np.ndarray, np.ndarray]:
  """(rows of `a`, rows of `b`), int32 [k]: the verses both have, in `a`'s order, from
  the held-out books (`held_out`: bool [G]) if `validation`, else from the others."""
  j = b.row[a.verse]  # [n_a]: b's row of each of a's verses, -1 where b lacks it
  keep = (j >= 0) & (held_out[a.verse] == validation)
  return np.flatnonzero(keep).astype(np.int32), j[keep]


class BiblePairSource(PairSource):
  """The verses of `a` (l1) that `b` (l2) also has, in `a`'s order; held-out books are
  `validation`, the rest `train`.

  Its datasets gather from both languages' text tensors by row, so no text is copied
  per pair; only the row indices are (int32 [k] twice), made when a dataset is.
  """

  def __init__(self, a: BibleLanguage, b: BibleLanguage, held_out: np.ndarray,
               counts: Mapping[str, int]):
    self._a, self._b, self._held_out = a, b, held_out
    super().__init__(f"{a.path} + {b.path}", counts)

  def _pairs(self, split: str) -> tf.data.Dataset:
    a, b = self._a, self._b
    rows = bible_rows(a, b, self._held_out, validation=split == "validation")
    return tf.data.Dataset.from_tensor_slices(rows).map(
        lambda i, j: {"source": tf.gather(a.texts, i), "target": tf.gather(b.texts, j)})


def discover_bible_files(directory: str | os.PathLike) -> dict[str, paths.Path]:
  """Language id -> file, for the `<language>.tsv` files in `directory` (MANIFEST.tsv aside)."""
  directory = paths.Path(paths.resolve(directory))
  if not directory.is_dir():
    problem = "is a file" if directory.exists() else "does not exist"
    raise DataError(f"bible directory {directory} {problem}: pass a directory holding one "
                    "<language>.tsv file of verse_id<TAB>text lines per language")
  found: dict[str, paths.Path] = {}
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    if not path.name.endswith(".tsv") or path.name == _BIBLE_MANIFEST:
      continue
    lang = _language_id(path.name[:-len(".tsv")], str(path))
    if lang in found:
      raise DataError(f"{found[lang].name} and {path.name} in {directory} are both {lang}: "
                      "keep one file per language")
    found[lang] = path
  if not found:
    raise DataError(f"bible directory {directory} has no <language>.tsv files")
  return found


def _read_bible_language(path: paths.Path, verse_index: dict[str, int]
                         ) -> tuple[tf.Tensor, np.ndarray]:
  """(texts string [n], g int32 [n]) of one file; adds its new verse ids to `verse_index`."""
  verses = bitext.read_id_tsv(path)
  for lineno, verse_id in enumerate(verses, 1):  # every line is a verse (else read_id_tsv fails)
    try:
      bitext.verse_book(verse_id)
    except DataError as e:
      raise DataError(f"{path}:{lineno}: {e}") from None
  g = np.array([verse_index.setdefault(v, len(verse_index)) for v in verses], np.int32)
  return tf.constant(list(verses.values())), g


def read_bible(files: Mapping[str, paths.Path], holdout_books: Sequence[str]
               ) -> tuple[dict[str, BibleLanguage], np.ndarray]:
  """The translations `files` ({language id: file}) indexed by shared verse numbers g,
  and whether each verse is in a held-out book (bool [G])."""
  verse_index: dict[str, int] = {}
  read = {lang: _read_bible_language(path, verse_index) for lang, path in files.items()}
  langs = {}
  for lang, (texts, g) in read.items():
    row = np.full([len(verse_index)], -1, np.int32)
    row[g] = np.arange(len(g), dtype=np.int32)
    num_bytes = tf.strings.length(texts).numpy().astype(np.int64)
    langs[lang] = BibleLanguage(str(files[lang]), texts, num_bytes, g, row)
  books = [bitext.verse_book(v) for v in verse_index]
  return langs, np.isin(books, list(holdout_books))


def _bible_pairs(files: Mapping[str, paths.Path], languages: Sequence[str] | None,
                 pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
  """The (l1, l2) id pairs asked for: `pairs`, else every pair of `languages` (all)."""
  if pairs is not None and languages is not None:
    raise ConfigError("pass languages or pairs, not both: pairs names its languages")

  def lang_id(tag):
    lang = _language_id(tag, "bible language")
    if lang not in files:
      raise DataError(f"bible language {tag!r} ({lang}) has no file; the files are "
                      f"{sorted(files)}")
    return lang

  if pairs is not None:
    chosen = sorted({tuple(sorted((lang_id(a), lang_id(b)))) for a, b in pairs})
    same = [p for p in chosen if p[0] == p[1]]
    if same or not chosen:
      raise ConfigError(f"bible pairs {same or 'none'}: each pair needs two languages")
    return chosen
  langs = sorted({lang_id(t) for t in languages}) if languages is not None else sorted(files)
  if len(langs) < 2:
    raise ConfigError(f"bible languages {langs}: a pair needs two languages")
  return list(itertools.combinations(langs, 2))


def bible_sources(directory: str | os.PathLike, *, languages: Sequence[str] | None = None,
                  pairs: Sequence[tuple[str, str]] | None = None,
                  holdout_books: Sequence[str] = BIBLE_HOLDOUT_BOOKS
                  ) -> tuple[dict[str, BiblePairSource], dict[str, int], list[paths.Path]]:
  """Sources and sizes by pair name, and the files read, of a bible directory.

  Pairs are `pairs` (language tags, each pair in any order), else every pair of
  `languages` (tags; all files when None). An implied pair whose languages share no
  training verse is left out; an explicit one is a DataError. A pair with no verse of
  `holdout_books` has no validation split.
  """
  bad = [book for book in holdout_books if not bitext.is_book(book)]
  if bad:
    raise ConfigError(f"holdout_books {bad} are not book codes: use codes as in verse ids "
                      "b.<BOOK>.<chapter>.<verse>, e.g. REV, MAT, 1CO")
  files = discover_bible_files(directory)
  chosen = _bible_pairs(files, languages, pairs)
  used = {lang: files[lang] for lang in sorted({lang for pair in chosen for lang in pair})}
  langs, held_out = read_bible(used, holdout_books)
  out, sizes = {}, {}
  for l1, l2 in chosen:
    a, b = langs[l1], langs[l2]
    train = bible_rows(a, b, held_out, validation=False)
    if not train[0].size:
      if pairs is not None:
        raise DataError(f"{a.path} and {b.path} share no verse outside the held-out books "
                        f"{list(holdout_books)}: choose other pairs")
      continue
    counts = {"train": train[0].size,
              "validation": bible_rows(a, b, held_out, validation=True)[0].size}
    out[pair_name(l1, l2)] = BiblePairSource(a, b, held_out, counts)
    sizes[pair_name(l1, l2)] = int(a.num_bytes[train[0]].sum() + b.num_bytes[train[1]].sum())
  return out, sizes, list(used.values())


# Moses/OPUS and TSV layouts: files of pairs, streamed.
@dataclasses.dataclass(frozen=True)
class PairStats:
  """What one pass over a file of pairs tells: counts, and `n_i` of its training split."""
  num_pairs: int
  num_holdout: int  # the first pairs, held out for validation
  train_bytes: int  # UTF-8 bytes of both sides of the other pairs


@dataclasses.dataclass(frozen=True)
class PairFiles:
  """One stream of pairs: two line-aligned files (Moses), or one `source<TAB>target` file."""
  source: str               # Moses: the l1 file; TSV: the file
  target: str | None = None  # Moses: the l2 file; TSV: None
  swapped: bool = False      # TSV: its first column is l2

  def iter_pairs(self) -> Iterator[tuple[str, str, str]]:
    """(`file:line`, one side, other side), read in Python (checks every line)."""
    if self.target is None:
      return bitext.iter_tsv_pairs(self.source)
    return bitext.iter_line_aligned(self.source, self.target)

  def dataset(self) -> tf.data.Dataset:
    """The pairs as {"source", "target"} strings, streamed by tf.data."""
    if self.target is None:
      first, second = ("target", "source") if self.swapped else FEATURES

      def fields(line):
        parts = tf.strings.split(line, "\t")
        return {first: parts[0], second: parts[1]}

      return tf.data.TextLineDataset(self.source).map(fields)
    return tf.data.Dataset.zip(tf.data.TextLineDataset(self.source),
                               tf.data.TextLineDataset(self.target)).map(
                                   lambda s, t: {"source": s, "target": t})

  def __str__(self) -> str:
    return self.source if self.target is None else f"{self.source} + {self.target}"


def _scan_pairs(files: PairFiles, validation_every: int) -> PairStats:
  """Checks every line (`bitext`), counts pairs and the training split's bytes."""
  num_pairs = total = 0
  for num_pairs, (_, a, b) in enumerate(files.iter_pairs(), 1):
    total += len(a.encode("utf-8")) + len(b.encode("utf-8"))
  holdout = sources.holdout_lines(num_pairs, validation_every)
  held = sum(len(a.encode("utf-8")) + len(b.encode("utf-8"))
             for _, a, b in itertools.islice(files.iter_pairs(), holdout))
  return PairStats(num_pairs, holdout, total - held)


def pair_stats(files: Sequence[PairFiles], validation_every: int) -> list[PairStats]:
  """`PairStats` of each stream: from the cache, else by one pass (then cached)."""
  cached = cache.read_json(_STATS_CACHE)
  stats, fresh = [], {}
  for f in files:
    key = cache.file_key(f.source, f.target and cache.file_key(f.target), validation_every,
                         _STATS_VERSION)
    if key not in cached:
      fresh[key] = dataclasses.asdict(_scan_pairs(f, validation_every))
    stats.append(PairStats(**(fresh.get(key) or cached[key])))
  if fresh:
    cache.update_json(_STATS_CACHE, fresh)
  return stats


class FilePairSource(PairSource):
  """Pairs streamed from files, one stream after the other; each holds out its first pairs."""

  def __init__(self, files: Sequence[PairFiles], stats: Sequence[PairStats]):
    self.files, self._stats = tuple(files), tuple(stats)
    super().__init__(", ".join(map(str, files)), {
        "train": sum(s.num_pairs - s.num_holdout for s in stats),
        "validation": sum(s.num_holdout for s in stats)})

  def _pairs(self, split: str) -> tf.data.Dataset:
    parts = [f.dataset().take(s.num_holdout) if split == "validation"
             else f.dataset().skip(s.num_holdout) for f, s in zip(self.files, self._stats)]
    return functools.reduce(tf.data.Dataset.concatenate, parts)


def _directory(directory: str | os.PathLike, layout: str) -> paths.Path:
  path = paths.Path(paths.resolve(directory))
  if not path.is_dir():
    problem = "is a file" if path.exists() else "does not exist"
    raise DataError(f"{layout} directory {path} {problem}: pass the directory of its files")
  return path


def _moses_side(name: str) -> tuple[str, str] | None:
  """(pair tag, side tag) of a `[<prefix>.]<l1>-<l2>.<side>` name whose side is l1 or l2."""
  stem, _, side = name.rpartition(".")
  pair = stem.rpartition(".")[2]
  if pair.startswith(f"{side}-") or pair.endswith(f"-{side}"):
    return pair, side
  return None


def discover_moses_files(directory: str | os.PathLike) -> dict[str, list[PairFiles]]:
  """Pair name -> its (l1 file, l2 file) streams, in file-name order."""
  directory = _directory(directory, "Moses")
  names = {p.name: p for p in directory.iterdir() if p.is_file()}
  found: dict[str, list[PairFiles]] = {}
  for name in sorted(names):
    parsed = _moses_side(name)
    if parsed is None:
      continue  # README, LICENSE, OPUS's .xml and .ids files
    pair, side = parsed
    tag_a, tag_b = split_pair_tag(pair, str(names[name]))
    base = name[:-len(side)]
    other = f"{base}{tag_b if side == tag_a else tag_a}"
    if other not in names:
      raise DataError(f"{names[name]} has no other side: add {other}, line i of which "
                      f"translates line i of {name}")
    if side != tag_a:
      continue  # the stream is made once, at its first side's file
    l1, l2, swapped = _ordered_ids(tag_a, tag_b, str(names[name]))
    files = (names[f"{base}{tag_b}"], names[name]) if swapped else (names[name],
                                                                     names[f"{base}{tag_b}"])
    found.setdefault(pair_name(l1, l2), []).append(PairFiles(str(files[0]), str(files[1])))
  if not found:
    raise DataError(f"Moses directory {directory} has no [<prefix>.]<l1>-<l2>.<l1> and "
                    ".<l2> files (e.g. en-sw.en and en-sw.sw)")
  return found


def discover_tsv_pair_files(directory: str | os.PathLike) -> dict[str, PairFiles]:
  """Pair name -> its `<l1>-<l2>.tsv` file."""
  directory = _directory(directory, "pair TSV")
  found: dict[str, PairFiles] = {}
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    if not path.name.endswith(".tsv") or "-" not in path.name:
      continue  # MANIFEST.tsv, ...
    tag_a, tag_b = split_pair_tag(path.name[:-len(".tsv")], str(path))
    l1, l2, swapped = _ordered_ids(tag_a, tag_b, str(path))
    name = pair_name(l1, l2)
    if name in found:
      raise DataError(f"{found[name].source} and {path} are both {name}: keep one file per "
                      "pair")
    found[name] = PairFiles(str(path), swapped=swapped)
  if not found:
    raise DataError(f"pair TSV directory {directory} has no <l1>-<l2>.tsv files (e.g. "
                    "en-sw.tsv of source<TAB>target lines)")
  return found


def file_pair_sources(streams: Mapping[str, Sequence[PairFiles]], validation_every: int
                      ) -> tuple[dict[str, FilePairSource], dict[str, int]]:
  """Sources and sizes (train bytes of both sides) by pair name, the files checked."""
  if validation_every < 2:
    raise ConfigError(f"validation_every={validation_every} is invalid: use >= 2 (one pair "
                      f"in {sources.VALIDATION_EVERY} by default)")
  out, sizes = {}, {}
  for name, files in streams.items():
    stats = pair_stats(files, validation_every)
    out[name] = FilePairSource(files, stats)
    sizes[name] = sum(s.train_bytes for s in stats)
  return out, sizes


# TFDS translation builders.
class TfdsPairSource(seqio.TfdsDataSource):
  """A TFDS translation builder's examples ({tag: text}) as {"source", "target"}."""

  def __init__(self, builder: str, splits: Mapping[str, str], data_dir: str | None,
               source_key: str, target_key: str):
    self._keys = (source_key, target_key)
    super().__init__(tfds_name=builder, tfds_data_dir=data_dir, splits=dict(splits),
                     caching_permitted=False, read_only=True)

  def get_dataset(self, split: str | None = None, shuffle: bool = True,
                  seed: int | None = None, shard_info: seqio.ShardInfo | None = None, *,
                  sequence_length=None, use_cached: bool = False,
                  num_epochs: int | None = 1) -> tf.data.Dataset:
    ds = super().get_dataset(split, shuffle, seed, shard_info, sequence_length=sequence_length,
                             use_cached=use_cached, num_epochs=num_epochs)
    source_key, target_key = self._keys
    return ds.map(lambda ex: {"source": ex[source_key], "target": ex[target_key]})


def tfds_translation_sources(builders: Mapping[str, tuple[str, str, str | None]],
                             data_dir: str | None
                             ) -> tuple[dict[str, TfdsPairSource], dict[str, int]]:
  """Sources and sizes by pair name of TFDS translation builders.

  `builders` maps a pair tag, whose two tags are the examples' keys, to
  (versioned builder, train split, validation split or None), e.g.
  {"de-en": ("wmt19_translate/de-en:1.0.0", "train", "validation")}.
  """
  out, sizes = {}, {}
  for tag, (builder, train, validation) in builders.items():
    tag_a, tag_b = split_pair_tag(tag, f"TFDS pair {builder}")
    l1, l2, swapped = _ordered_ids(tag_a, tag_b, f"TFDS pair {builder}")
    name = pair_name(l1, l2)
    if name in out:
      raise DataError(f"TFDS pairs {tag!r} and another are both {name}: pass one")
    splits = {"train": train, **({"validation": validation} if validation else {})}
    keys = (tag_b, tag_a) if swapped else (tag_a, tag_b)
    out[name] = TfdsPairSource(builder, splits, data_dir, *keys)
    sizes[name] = sources.tfds_size(out[name], train)
    features = sorted(out[name].tfds_dataset.info.features)
    if not set(keys) <= set(features):
      raise DataError(f"TFDS builder {builder} has features {features}, not {tag_a!r} and "
                      f"{tag_b!r}: name the pair by its two text features, e.g. 'de-en'")
  return out, sizes


# Tokenization and registration.
@functools.lru_cache(maxsize=None)
def _tokenize_pair(source_vocab: vocab_lib.Vocabulary, target_vocab: vocab_lib.Vocabulary):
  """Strings -> ids without specials; traced once for every pair of a mixture."""
  spec = tf.TensorSpec([], tf.string)

  @tf.function(input_signature=[{"source": spec, "target": spec}])
  def tokenize_pair(ex):
    return {"source": tf.cast(source_vocab.encode_tf(ex["source"]), tf.int32),
            "target": tf.cast(target_vocab.encode_tf(ex["target"]), tf.int32)}

  return tokenize_pair


def tokenize_pairs(dataset: tf.data.Dataset, sequence_length: Mapping[str, int] | None,
                   output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  """{"source", "target"} strings -> {"source": int32 [n], "target": int32 [m]} ids.

  Nothing is added or cut: framing with specials and fitting pairs into rows (one
  row per pair for TLM, one per side for contrastive batches) is the feature
  converters' choice, so `sequence_length` is not used here.
  """
  del sequence_length
  tokenize = _tokenize_pair(output_features["source"].vocabulary,
                            output_features["target"].vocabulary)
  return dataset.map(tokenize)


def register_pairs(name: str, pair_sources: Mapping[str, seqio.DataSource],
                   sizes: Mapping[str, int], *, alpha: float = mixtures.DEFAULT_ALPHA,
                   vocabulary: vocab_lib.Vocabulary | None = None,
                   spec: object = None) -> seqio.Mixture:
  """Registers a Task `<name>.<pair>` per pair source and the Mixture `name` over them
  (`mixtures.register_corpus` with the pair features and `tokenize_pairs`)."""
  return mixtures.register_corpus(name, pair_sources, sizes, alpha=alpha, vocabulary=vocabulary,
                                  spec=spec, feature_names=FEATURES,
                                  task_preprocessors=(tokenize_pairs,))
