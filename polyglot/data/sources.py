"""Raw text per language: the embedded corpus, text-file directories, TFDS builders.

Every source here yields one string per line of text, in file order; the task
preprocessors (`preprocessors.TEXT_PREPROCESSORS`) tokenize and concatenate
them. A text source skips blank lines and deals the others to data shards
(`dealt`: every `num_shards`-th line; a training split with fewer lines than
shards is read whole by every shard). Each source has a `train` split and, where a language has at least two
lines, a `validation` split: the first `ceil(lines / validation_every)`
non-blank lines (5% by default). The held-out block sits at the start of the
file so that neither split has to read past the other.

Sizes (`n_i` of the sampling rates) are counted in UTF-8 bytes of text,
uncompressed: CC-100's unit (XLM-R reports it in GiB, table 6), known without
tokenizing. A text file is read once to count them and to check that it is
UTF-8; the result is cached under `$POLYGLOT_CACHE` keyed by path, size and
mtime, so registering hundreds of languages again costs a stat per file.

Bad input is refused at registration with a one-line `DataError`: a missing
directory, a file name that is no language tag, two files of one language, an
empty file, bytes that are not UTF-8 (with the line number; polyglot does not
guess encodings: re-encode the file), a `.gz` or `.xz` file whose stream is
damaged or cut short. That last check costs nothing extra: the pass above
decompresses each file whole and Python's readers check every CRC and the
end-of-stream marker; TensorFlow's gzip reader would otherwise fail inside
tf.data in the middle of a run, or stop early without an error at a cut.

- embedded: `gflanguages` sample texts (UDHR excerpts in ~630 living
  languages), shipped with the package, so demos and tests need no download.
- text directory: one file per language, named by language tag, `<tag>.txt`,
  `.txt.gz` or `.txt.xz` (CC-100: `sw.txt.xz`; Glot500-c and UDHR:
  `swh_Latn.txt`). Lines are texts; blank lines (CC-100's document breaks)
  are skipped. `.gz` is read by TensorFlow directly; `.xz`, which TensorFlow
  cannot read, is decompressed once into the cache. The directory may be a
  URL (`gs://...`): polyglot lists and scans it through `polyglot.paths`, and
  tf.data reads the files with TensorFlow's own GCS client.
- TFDS: a prepared builder in a TFDS data dir (mC4 is `c4/multilingual` with
  splits `<lang>` and `<lang>-validation`); its `text` feature is used.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import json
import lzma
import math
import os
import re
import shutil
import zlib
from typing import Iterator, Mapping, Sequence

from polyglot import _env, paths
from polyglot.data import cache, languages
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()
import seqio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

VALIDATION_EVERY = 20  # 1 line in 20 (5%) held out for eval loss
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.xz")
_STATS_CACHE = "text_stats.json"
_STATS_VERSION = 1  # bump when the statistics change meaning
READ_BYTES = 4 << 20  # text read at a time from a range of a file


def holdout_lines(num_lines: int, validation_every: int) -> int:
  """Lines held out for validation: one in `validation_every`, none below two lines."""
  return 0 if num_lines < 2 else math.ceil(num_lines / validation_every)


def dealt(split: str, num_lines: int | None, shard: seqio.ShardInfo | None) -> bool:
  """Whether data shard `shard` reads only its share of a language's lines (every
  `num_shards`-th, from line `index`). Not with one shard, nor in a training split with fewer
  lines than shards: every shard reads that one whole, since a shard dealt no line would
  wait forever for the first chunk of its endless stream."""
  if shard is None or shard.num_shards == 1:
    return False
  return split != "train" or num_lines is None or num_lines >= shard.num_shards


def dealt_block(num_lines: int, shard: seqio.ShardInfo) -> tuple[int, int]:
  """The lines [start, stop) of `num_lines` that data shard `shard` reads into its token
  streams (`tokenized.load_corpus`, when `dealt`): a contiguous block, so that a host reads
  only the part of a tokenized cache that holds it. (tf.data deals lines in turn.)"""
  return (shard.index * num_lines // shard.num_shards,
          (shard.index + 1) * num_lines // shard.num_shards)


def non_blank(lines: tf.data.Dataset) -> tf.data.Dataset:
  """The lines with text: a blank line adds no token, and lines are dealt to shards after
  this (so that a shard is never dealt only blank ones, as from a file of paragraphs
  separated by blank lines read by two shards)."""
  return lines.filter(lambda line: tf.strings.strip(line) != "")


@dataclasses.dataclass(frozen=True)
class LineRange:
  """Some consecutive lines of a source, for one writer of a tokenized cache
  (`polyglot.data.tokenized`): `lines` themselves, or those of the file `path` that start
  in its bytes [start, end), or (a compressed file, read from its start) its raw lines
  [skip, skip + take), all when `take` is None."""
  lines: tuple[str, ...] = ()
  path: str | None = None
  start: int = 0
  end: int = 0
  skip: int = 0
  take: int | None = None


def read_range(lines: LineRange) -> Iterator[bytes]:
  """The non-blank lines of `lines` (the lines of `LineSource.get_dataset`), as UTF-8 bytes
  without their line break."""
  return (line for line in _raw_lines(lines) if line.strip())


def _raw_lines(lines: LineRange) -> Iterator[bytes]:
  if lines.path is None:
    yield from (line.encode("utf-8") for line in lines.lines)
    return
  path = paths.Path(lines.path)
  if lines.path.endswith(TEXT_SUFFIXES[1:]):
    with _open_binary(_readable_path(path)) as f:
      for i, line in enumerate(f):
        if lines.take is not None and i >= lines.skip + lines.take:
          break
        if i >= lines.skip:
          yield line.rstrip(b"\n")
    return
  with path.open("rb") as f:
    if lines.start:
      f.seek(lines.start - 1)
      f.readline()  # the line that began before `start` belongs to the range before
    pos, carry = f.tell(), b""
    while pos < lines.end:  # whole blocks, split at line breaks; `carry`: a line begun
      block = f.read(min(READ_BYTES, lines.end - pos))
      if not block:
        break
      pos += len(block)
      *whole, carry = (carry + block).split(b"\n")
      yield from whole
    if carry:  # a line that begins before `end` and ends after it (or at the file's end)
      yield carry + f.readline().rstrip(b"\n")


def _byte_ranges(path: str, start: int, end: int, part_bytes: int) -> list[LineRange]:
  """[start, end) of `path` in ranges of `part_bytes`: each reads the lines starting in it."""
  cuts = list(range(start, end, part_bytes)) + [end]
  return [LineRange(path=path, start=a, end=b) for a, b in zip(cuts, cuts[1:])] or [
      LineRange(path=path, start=start, end=end)]


class LineSource(seqio.DataSource):
  """A seqio DataSource of text lines in one language, split by a held-out prefix."""

  @property
  @abc.abstractmethod
  def fingerprint(self) -> str:
    """Changes when the lines may have changed."""

  @abc.abstractmethod
  def ranges(self, split: str, part_bytes: int) -> list[LineRange]:
    """`split`'s lines in order, in ranges of about `part_bytes` bytes of text."""

  def __init__(self, num_lines: int, num_holdout: int):
    splits = {"train": num_lines - num_holdout}
    if num_holdout:
      splits["validation"] = num_holdout
    super().__init__(splits=tuple(splits), num_input_examples=splits, caching_permitted=True)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True  # by non-blank lines (`dealt`)

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  @abc.abstractmethod
  def _lines(self, split: str) -> tf.data.Dataset:
    """The lines of `split`, in order."""

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    # Shuffling happens after mixing.
    del shuffle, seed, sequence_length, use_cached, num_epochs
    if split not in self.splits:
      raise DataError(f"{self} has no {split!r} split (it has {list(self.splits)}): a language "
                      "needs at least 2 lines to hold one out for validation")
    lines = non_blank(self._lines(split))
    if dealt(split, self.num_input_examples(split), shard_info):
      lines = lines.shard(shard_info.num_shards, shard_info.index)
    return lines


class MemorySource(LineSource):
  """Lines held in memory (the embedded corpus)."""

  def __init__(self, name: str, lines: Sequence[str], num_holdout: int):
    self._name = name
    self._lines_by_split = {"validation": list(lines[:num_holdout]),
                            "train": list(lines[num_holdout:])}
    super().__init__(len(lines), num_holdout)

  def _lines(self, split: str) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(self._lines_by_split[split])

  @property
  def fingerprint(self) -> str:
    text = "\n".join(self._lines_by_split["validation"] + self._lines_by_split["train"])
    return f"{self._name}:{hashlib.sha256(text.encode()).hexdigest()}"

  def ranges(self, split: str, part_bytes: int) -> list[LineRange]:
    lines, ranges, size = self._lines_by_split[split], [], 0
    first = 0
    for i, line in enumerate(lines):
      size += len(line.encode("utf-8")) + 1
      if size >= part_bytes:
        ranges.append(LineRange(lines=tuple(lines[first:i + 1])))
        first, size = i + 1, 0
    if first < len(lines) or not ranges:
      ranges.append(LineRange(lines=tuple(lines[first:])))
    return ranges

  def __str__(self) -> str:
    return f"MemorySource({self._name})"


@dataclasses.dataclass(frozen=True)
class TextStats:
  """What one pass over a text file tells: `n_i` and where the held-out block ends."""
  num_bytes: int       # UTF-8 bytes, uncompressed
  num_lines: int       # non-blank lines
  holdout_raw: int     # raw lines (blank ones included) forming the validation block


class TextFileSource(LineSource):
  """The lines of one text file (`.txt`, `.txt.gz`, or `.txt.xz` read via the cache)."""

  def __init__(self, path: paths.Path, stats: TextStats, validation_every: int):
    self.path = path
    self._readable = _readable_path(path)
    self._holdout_raw = stats.holdout_raw
    super().__init__(stats.num_lines, holdout_lines(stats.num_lines, validation_every))

  def _lines(self, split: str) -> tf.data.Dataset:
    compression = "GZIP" if self._readable.name.endswith(".gz") else ""
    ds = tf.data.TextLineDataset(os.fspath(self._readable), compression_type=compression)
    return ds.take(self._holdout_raw) if split == "validation" else ds.skip(self._holdout_raw)

  @property
  def fingerprint(self) -> str:
    return cache.file_key(self.path)

  def ranges(self, split: str, part_bytes: int) -> list[LineRange]:
    path = os.fspath(self.path)
    if path.endswith(TEXT_SUFFIXES[1:]):  # a compressed stream is read from its start
      if split == "validation":
        return [LineRange(path=path, take=self._holdout_raw)]
      return [LineRange(path=path, skip=self._holdout_raw)]
    holdout_end = self._holdout_bytes()
    if split == "validation":
      return _byte_ranges(path, 0, holdout_end, part_bytes)
    return _byte_ranges(path, holdout_end, self.path.stat().length, part_bytes)

  def _holdout_bytes(self) -> int:
    """Where the validation block ends in the file."""
    with self.path.open("rb") as f:
      for _ in range(self._holdout_raw):
        f.readline()
      return f.tell()

  def __str__(self) -> str:
    return f"TextFileSource({self.path})"


def text_lines(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Strings from a source: as they are, or the `text` feature of TFDS examples."""
  if isinstance(dataset.element_spec, dict):
    return dataset.map(lambda ex: ex["text"])
  return dataset


# Embedded corpus.
@dataclasses.dataclass(frozen=True)
class EmbeddedCorpus:
  """gflanguages sample texts by canonical language id, each a tuple of lines."""
  texts: Mapping[str, tuple[str, ...]]
  validation_every: int = VALIDATION_EVERY

  def sizes(self) -> dict[str, int]:
    return {lang: sum(len(t.encode("utf-8")) for t in lines) for lang, lines in self.texts.items()}

  def holdout(self, lang: str) -> int:
    return holdout_lines(len(self.texts[lang]), self.validation_every)

  def train_lines(self, lang: str) -> tuple[str, ...]:
    return self.texts[lang][self.holdout(lang):]

  def sources(self) -> dict[str, MemorySource]:
    return {lang: MemorySource(f"embedded.{lang}", lines, self.holdout(lang))
            for lang, lines in self.texts.items()}


# The specimen fields hold whole UDHR paragraphs; the shorter fields are cut-off
# prefixes of them (font-specimen lengths), so only these are read.
_SPECIMEN_FIELDS = ("specimen_36", "specimen_32", "specimen_21", "specimen_16")


def _sample_lines(sample_text) -> tuple[str, ...]:
  """Distinct paragraphs of a gflanguages sample text, without truncated copies."""
  lines: list[str] = []
  for field in _SPECIMEN_FIELDS:
    for line in getattr(sample_text, field).split("\n"):
      line = line.strip()
      if line and line not in lines:
        lines.append(line)
  return tuple(l for l in lines if not any(o != l and o.startswith(l) for o in lines))


def embedded_fingerprint() -> str:
  """Changes when the embedded corpus may change (the gflanguages release)."""
  import gflanguages  # pylint: disable=g-import-not-at-top
  return f"gflanguages-{gflanguages.__version__}-embedded-v1"


def _parse_embedded() -> dict[str, tuple[str, ...]]:
  """Lines by canonical language id, from gflanguages' ~1,700 text-format records."""
  import gflanguages  # pylint: disable=g-import-not-at-top
  texts: dict[str, tuple[str, ...]] = {}
  for gf_id, lang in sorted(gflanguages.LoadLanguages().items()):
    if lang.historical or not lang.HasField("sample_text"):
      continue
    try:
      lang_id = languages.resolve(gf_id).id
    except DataError:
      continue
    lines = _sample_lines(lang.sample_text)
    if lines and len("".join(lines)) > len("".join(texts.get(lang_id, ()))):
      texts[lang_id] = lines
  return dict(sorted(texts.items()))


@functools.cache
def embedded_corpus() -> EmbeddedCorpus:
  """Sample texts of every living language in gflanguages that has one.

  Historical languages (Gothic, Linear B, ...) and collective codes (`art`,
  `ber`) are left out. Where two gflanguages entries name one canonical
  language (`ar_Arab`, `arb_Arab`), the one with more text is kept. Parsing
  gflanguages takes about a second, so the texts are kept in the user cache
  (`cache.cache_dir`) under `embedded_fingerprint`; a cache that cannot be
  read is parsed again and rewritten, one that cannot be written is skipped.
  """
  name = f"{embedded_fingerprint()}.json"
  with contextlib.suppress(OSError, ValueError):
    texts = json.loads((cache.cache_dir() / name).read_text(encoding="utf-8"))
    if isinstance(texts, dict) and all(
        isinstance(v, list) and all(isinstance(t, str) for t in v) for v in texts.values()):
      return EmbeddedCorpus({lang: tuple(lines) for lang, lines in texts.items()})
  texts = _parse_embedded()
  with contextlib.suppress(OSError):
    paths.write_bytes(cache.cache_dir() / name, json.dumps(texts, ensure_ascii=False).encode())
  return EmbeddedCorpus(texts)


# Text directories.
def _language_tag(path: paths.Path) -> str:
  name = path.name
  for suffix in TEXT_SUFFIXES:
    if name.endswith(suffix):
      return name[: -len(suffix)]
  raise AssertionError(name)


def discover_text_files(directory: str | os.PathLike) -> dict[str, paths.Path]:
  """Canonical language id -> file, for the `<tag>.txt[.gz|.xz]` files in `directory`
  (a local path or a URL)."""
  directory = paths.Path(paths.resolve(directory))
  if not directory.is_dir():
    problem = "is a file" if directory.exists() else "does not exist"
    raise DataError(f"text directory {directory} {problem}: pass a directory holding "
                    "one <language>.txt file per language (e.g. sw.txt, swh_Latn.txt)")
  found: dict[str, paths.Path] = {}
  for path in sorted(directory.iterdir(), key=lambda p: p.name):
    if not path.is_file() or not path.name.endswith(TEXT_SUFFIXES):
      continue  # MANIFEST.tsv, READMEs, ...
    try:
      lang = languages.resolve(_language_tag(path)).id
    except DataError as e:
      raise DataError(f"{path}: {e}; rename the file to <language>.txt") from None
    if lang in found:
      raise DataError(f"{found[lang].name} and {path.name} in {directory} are both {lang}: "
                      "keep one file per language")
    found[lang] = path
  if not found:
    raise DataError(f"text directory {directory} has no <language>.txt, .txt.gz or .txt.xz "
                    "files: add one file per language, e.g. sw.txt")
  return found


def _open_binary(path: paths.Path):
  raw = path.open("rb")
  if path.name.endswith(".gz"):
    return gzip.open(raw, "rb")
  if path.name.endswith(".xz"):
    return lzma.open(raw, "rb")
  return raw


# What Python's gzip and lzma raise for a stream that is damaged, cut short or not compressed.
_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError)


@contextlib.contextmanager
def _decompressing(path: paths.Path) -> Iterator[None]:
  """Turns a damaged stream of the compressed `path`, read in the block, into a DataError."""
  try:
    yield
  except _STREAM_ERRORS as e:
    tool = {".gz": "gzip", ".xz": "xz"}[path.suffix]
    reason = str(e) or type(e).__name__
    raise DataError(f"text file {path} is not a readable {tool} stream ({reason}): it is "
                    f"damaged or cut short; check it with `{tool} -t`, then download or "
                    "compress it again") from None


def _scan(path: paths.Path, validation_every: int) -> TextStats:
  """Counts bytes and non-blank lines, checks UTF-8, finds the held-out block.

  Blank means ASCII whitespace only, as for `tf.strings.strip` in the pipeline. A compressed
  file is decompressed whole here, which checks its stream (see the module docstring).
  """
  num_bytes = num_lines = 0
  with _decompressing(path), _open_binary(_readable_path(path)) as f:
    for line_no, line in enumerate(f, 1):
      try:
        line.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{path} line {line_no}: bytes are not UTF-8 ({e.reason} at byte "
                        f"{e.start}): re-encode the file, e.g. iconv -f <encoding> -t UTF-8"
                        ) from None
      num_bytes += len(line)
      num_lines += bool(line.strip())
  if not num_lines:
    raise DataError(f"text file {path} has no text: fill it or remove it from the directory")
  holdout = holdout_lines(num_lines, validation_every)
  holdout_raw = 0
  with _open_binary(_readable_path(path)) as f:
    while holdout:
      holdout -= bool(f.readline().strip())
      holdout_raw += 1
  return TextStats(num_bytes, num_lines, holdout_raw)


def text_stats(files: Sequence[paths.Path], validation_every: int) -> list[TextStats]:
  """`TextStats` of each file: from the cache, else by one pass (then cached)."""
  cached = cache.read_json(_STATS_CACHE)
  stats, fresh = [], {}
  for path in files:
    key = cache.file_key(path, validation_every, _STATS_VERSION)
    if key not in cached:
      fresh[key] = dataclasses.asdict(_scan(path, validation_every))
    stats.append(TextStats(**(fresh.get(key) or cached[key])))
  if fresh:
    cache.update_json(_STATS_CACHE, fresh)
  return stats


def _readable_path(path: paths.Path) -> paths.Path:
  """`path`, or for `.xz` (which TensorFlow cannot read) its decompressed copy in the cache."""
  if not path.name.endswith(".xz"):
    return path
  key = hashlib.sha256(cache.file_key(path).encode()).hexdigest()[:16]
  plain = cache.cache_dir("decompressed") / f"{path.name[:-3]}.{key}"
  if not plain.exists():
    tmp = plain.with_name(f".{plain.name}.partial")
    try:
      with _decompressing(path), _open_binary(path) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    except DataError:
      tmp.unlink(missing_ok=True)  # no partial copy left in the cache
      raise
    tmp.replace(plain)
  return paths.Path(plain)


def text_directory_sources(directory: str | os.PathLike,
                           validation_every: int = VALIDATION_EVERY
                           ) -> tuple[dict[str, TextFileSource], dict[str, int]]:
  """Sources and sizes (bytes) of a text directory, keyed by canonical language id."""
  if validation_every < 2:
    raise ConfigError(f"validation_every={validation_every} is invalid: use >= 2 (one line "
                      f"in {VALIDATION_EVERY} by default)")
  files = discover_text_files(directory)
  stats = text_stats(list(files.values()), validation_every)
  sources = {lang: TextFileSource(path, s, validation_every)
             for (lang, path), s in zip(files.items(), stats)}
  return sources, {lang: s.num_bytes for lang, s in zip(files, stats)}


# TFDS.
def tfds_source(builder: str, train_split: str, validation_split: str | None,
                data_dir: str | None) -> seqio.TfdsDataSource:
  """A seqio source over a prepared TFDS builder (`c4/multilingual`, `wikipedia/20230601.sw`)."""
  splits = {"train": train_split}
  if validation_split:
    splits["validation"] = validation_split
  return seqio.TfdsDataSource(tfds_name=builder, tfds_data_dir=data_dir, splits=splits,
                              caching_permitted=True, read_only=True)


def tfds_size(source: seqio.TfdsDataSource, train_split: str) -> int:
  """Stored bytes of the TFDS split `train_split` (from dataset_info; no pass over the data)."""
  tfds_split = re.sub(r"\[.*\]$", "", train_split)  # "train[1%:]" -> "train"
  try:
    return source.tfds_dataset.info.splits[tfds_split].num_bytes
  except Exception as e:  # TFDS raises several types for a missing/unprepared builder
    raise DataError(f"TFDS builder {source.tfds_dataset.name!r} split {tfds_split!r} cannot be "
                    f"read ({type(e).__name__}: {str(e).splitlines()[0]}): prepare it in the "
                    "data dir with tfds build, or pass the right data_dir") from None
