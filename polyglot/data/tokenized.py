"""Tokenized corpora: a text mixture tokenized once, offline, with Apache Beam.

    python tools/cache_tasks.py --gin_file=runs/demo.gin --output_dir=gs://bucket/cache/embedded
    python -m polyglot.train --gin_file=runs/demo.gin --gin_file=data/tokenized.gin \
        --gin.CACHE_DIR="'gs://bucket/cache/embedded'"

`write` runs one Beam job (the DirectRunner here; Dataflow, Flink or Spark
with `--runner=...`) that splits every task of the mixture into parts (byte
ranges of a text file, cut where lines start, or runs of in-memory lines),
tokenizes each part with the task's own tokenizer and writes it as one TFRecord
shard. A part is a shard, so reading a task's shards in order reads its lines
in file order, one record per non-blank line. Training reads a data shard's
token streams by index (`load_corpus`, `polyglot.data.streams`): each data
shard takes a contiguous block of each language's lines (`sources.dealt_block`),
so a host reads only the cache files that hold its blocks. The validation
split is read by tf.data (`TokenizedSource`), which deals lines to data shards
in turn as it does the text's (`sources.dealt`), and gives the raw pipeline's
batches, bit for bit.

Training from text without a cache makes the same streams on the host:
`load_corpus` tokenizes the lines a data shard is dealt with SentencePiece's
own threads (`_tokens`) into the same local token file, once per text,
vocabulary and shard, so text and its cache train on the same batches. That
costs one pass over the host's share of the text at the first start (about
3M tokens/s per core, docs/benchmarks.md) and 4 bytes of local disk per
token; the Beam cache does that pass once for all hosts, on as many workers
as the runner has, for corpora that size makes slow to tokenize at each start.

Layout (seqio's offline-cache format per task, so seqio's own reader,
`Task.get_dataset(use_cached=True)` after `seqio.add_global_cache_dirs`,
reads it too, in its own interleaved order):

    <dir>/mixture.json         name, alpha, tasks in mixture order with their sizes
                               (UTF-8 bytes, the rates' n_i), vocabulary digest. Last written
    <dir>/vocabulary.model     the SentencePiece model of the ids
    <dir>/<task>/info.<split>.json      features (`targets`: int32 [None]), identity
    <dir>/<task>/stats.<split>.json     examples, tokens, text bytes, every shard's name,
                                        records and size
    <dir>/<task>/<split>.tfrecord-XXXXX-of-YYYYY   tf.train.Example {"targets": ids}
    <dir>/<task>/COMPLETED

`register` makes a mixture of the cache alone (no raw text needed) and
refuses, with a one-line `DataError` naming the task and the fix, a cache that
is partial (no `mixture.json`, no `COMPLETED`), has a shard missing, extra or
of another size than its stats say, or was tokenized with another vocabulary.
Running `write` again finishes a partial cache: tasks whose files check out are
kept, the others are written again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import struct
import tempfile
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from polyglot import _env, paths
from polyglot.data import cache, mixtures, preprocessors, sources, streams
from polyglot.data import vocab as vocab_lib
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()
import seqio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

FORMAT = 2  # 2: blank lines are not stored
MIXTURE_FILE = "mixture.json"
VOCABULARY_FILE = "vocabulary.model"
COMPLETED = "COMPLETED"  # seqio's marker of a finished task cache
PART_BYTES = 256 << 20   # text per shard: a unit of work for a Beam worker
LINES_PER_READ = 256     # records parsed at once
IN_MEMORY_BYTES = 1 << 20  # a task split at most this big is read whole when its stream is built
LINES_PER_ENCODE = 1 << 14  # text lines tokenized at once, by every core
STREAMS_DIR = "streams"     # the token files' folder in the local cache
STREAMS_FORMAT = 2          # of the token files; 2: a shard reads a block of lines
_FIX = "write it again with tools/cache_tasks.py --output_dir={dir}"


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _shard_name(split: str, index: int, count: int) -> str:
  return f"{split}.tfrecord-{index:05d}-of-{count:05d}"  # seqio's cached shard names


@dataclasses.dataclass(frozen=True)
class Part:
  """One shard to write: the lines of `lines` (a `sources.LineRange`) of a task's split."""
  task: str
  split: str
  index: int
  count: int
  lines: sources.LineRange

  @property
  def name(self) -> str:
    return _shard_name(self.split, self.index, self.count)


def _identity(task: seqio.Task, vocabulary_sha: str) -> dict[str, Any]:
  """What a task's cache was made from: a changed source or vocabulary rewrites it."""
  source = task.source
  return {"format": FORMAT, "source": source.fingerprint, "vocabulary": vocabulary_sha,
          "splits": {split: source.num_input_examples(split) for split in source.splits}}


def _text_tasks(mixture: str) -> list[seqio.Task]:
  """The tasks of `mixture` (a corpus registered by `mixtures.register_corpus`), in order."""
  mixtures.corpus_settings(mixture)  # a one-line error for anything else
  tasks = mixtures.get_provider(mixture).tasks
  for task in tasks:
    if not isinstance(task.source, sources.LineSource):
      raise DataError(f"task {task.name} reads {type(task.source).__name__}: only text corpora "
                      "(the embedded corpus, text directories) are cached; train from it raw")
  return tasks


# Writing (the Beam job's steps; each is a plain function of plain values).
def _serialize(ids) -> bytes:
  feature = tf.train.Feature(int64_list=tf.train.Int64List(value=ids))
  return tf.train.Example(features=tf.train.Features(feature={"targets": feature})
                          ).SerializeToString()


def write_part(part: Part, out_dir: str, vocabulary: vocab_lib.Vocabulary,
               batch_lines: int = 4096) -> tuple[str, dict[str, Any]]:
  """Tokenizes `part` into its shard; -> (task, the shard's stats)."""
  tokenize = preprocessors.tokenize_batch(vocabulary)
  records = tokens = text_bytes = 0
  with tempfile.TemporaryDirectory(prefix="polyglot-cache-") as tmp:
    local = os.path.join(tmp, part.name)
    with tf.io.TFRecordWriter(local) as writer:
      for batch in _batches(sources.read_range(part.lines), batch_lines):
        ids = tokenize(tf.constant(batch))
        for row in ids.numpy():
          writer.write(_serialize(row))
        records += len(batch)
        tokens += int(ids.flat_values.shape[0])
        text_bytes += sum(len(line) for line in batch)
    with open(local, "rb") as f:
      data = f.read()
  paths.write_bytes(paths.join(out_dir, part.task, part.name), data)
  return part.task, {"split": part.split, "index": part.index, "name": part.name,
                     "records": records, "tokens": tokens, "text_bytes": text_bytes,
                     "bytes": len(data)}


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
  batch = []
  for line in lines:
    batch.append(line)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def finish_task(task_shards: tuple[str, Iterable[dict[str, Any]]], out_dir: str,
                identities: Mapping[str, dict[str, Any]]) -> str:
  """(task, its shards' stats) -> writes the task's info and stats per split, then
  `COMPLETED`."""
  task, shards = task_shards
  task_dir = paths.join(out_dir, task)
  by_split: dict[str, list[dict[str, Any]]] = {}
  for shard in shards:
    by_split.setdefault(shard["split"], []).append(shard)
  for split, parts in sorted(by_split.items()):
    parts.sort(key=lambda s: s["index"])
    info = {"features": {"targets": {"shape": [None], "dtype": "int32"}},
            "num_shards": len(parts), "seqio_version": seqio.__version__,
            "polyglot": identities[task]}
    stats = {"examples": sum(s["records"] for s in parts),
             "targets_tokens": sum(s["tokens"] for s in parts),
             "text_bytes": sum(s["text_bytes"] for s in parts),
             "shards": [{k: s[k] for k in ("name", "records", "bytes")} for s in parts]}
    paths.write_text(seqio.utils.get_cached_info_path(task_dir, split), json.dumps(info))
    paths.write_text(seqio.utils.get_cached_stats_path(task_dir, split), json.dumps(stats))
  paths.write_text(paths.join(task_dir, COMPLETED), "")
  return task


def plan(mixture: str, out_dir: str, part_bytes: int = PART_BYTES) -> tuple[list[Part], dict]:
  """The parts still to write (tasks whose cache checks out are kept) and every task's
  identity."""
  check_part_bytes(part_bytes)
  tasks = _text_tasks(mixture)
  vocabulary = tasks[0].output_features["targets"].vocabulary
  vocabulary_sha = vocabulary.sha256
  identities = {t.name: _identity(t, vocabulary_sha) for t in tasks}
  parts = []
  for task in tasks:
    if _task_problem(out_dir, task.name, identities[task.name]) is None:
      continue
    for split in task.source.splits:
      ranges = task.source.ranges(split, part_bytes)
      parts += [Part(task.name, split, i, len(ranges), r) for i, r in enumerate(ranges)]
  return parts, identities


def write(mixture: str, out_dir: str, pipeline_args: Sequence[str] = (),
          part_bytes: int = PART_BYTES) -> dict[str, Any]:
  """Tokenizes every task of `mixture` into `out_dir` with one Beam job; -> mixture.json."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  out_dir = paths.resolve(out_dir)
  tasks = _text_tasks(mixture)
  vocabulary = tasks[0].output_features["targets"].vocabulary
  parts, identities = plan(mixture, out_dir, part_bytes)
  if parts:
    options = pipeline_options.PipelineOptions(list(pipeline_args))
    with beam.Pipeline(options=options) as p:
      _ = (p
           | "Parts" >> beam.Create(parts)
           | "Spread" >> beam.Reshuffle()
           | "Tokenize" >> beam.Map(write_part, out_dir, vocabulary)
           | "ByTask" >> beam.GroupByKey()
           | "Finish" >> beam.Map(finish_task, out_dir, identities))
  sizes, alpha = mixtures.corpus_settings(mixture)
  description = {
      "format": FORMAT, "name": mixture, "alpha": alpha,
      "vocabulary": vocabulary.sha256,
      "tasks": [{"name": t.name, "key": key, "size": sizes[key]}
                for t, key in zip(tasks, sizes)]}
  for task in tasks:  # a task a worker failed to finish would be a partial cache
    problem = _task_problem(out_dir, task.name, identities[task.name])
    if problem:
      raise DataError(f"tokenized corpus {out_dir}: {problem}; " + _FIX.format(dir=out_dir))
  paths.write_bytes(paths.join(out_dir, VOCABULARY_FILE), vocabulary.model_bytes)
  paths.write_text(paths.join(out_dir, MIXTURE_FILE), json.dumps(description, indent=1))
  return description


# Checking and reading.
def _read_json(path: str) -> Any:
  try:
    return json.loads(paths.Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _task_problem(out_dir: str, task: str, identity: dict[str, Any] | None = None,
                  vocabulary_sha: str | None = None) -> str | None:
  """Why `task`'s cache in `out_dir` cannot be used (None when it can): `identity` (all of
  it) or `vocabulary_sha` (the vocabulary alone) must be what its info files record."""
  task_dir = paths.Path(paths.join(out_dir, task))
  if not (task_dir / COMPLETED).exists():
    return f"task {task} is not (completely) written"
  listing = {p.name: p for p in task_dir.iterdir()}
  splits = [n[len("info."):-len(".json")] for n in listing if n.startswith("info.")]
  if not splits:
    return f"task {task} has no info.<split>.json"
  for split in splits:
    info = _read_json(seqio.utils.get_cached_info_path(os.fspath(task_dir), split))
    stats = _read_json(seqio.utils.get_cached_stats_path(os.fspath(task_dir), split))
    if info is None or stats is None:
      return f"task {task} has an unreadable info or stats file for {split!r}"
    recorded = info.get("polyglot") or {}
    if identity is not None and recorded != identity:
      return f"task {task} was tokenized from other text or with another vocabulary"
    if vocabulary_sha is not None and recorded.get("vocabulary") != vocabulary_sha:
      return f"task {task} was tokenized with another vocabulary than {VOCABULARY_FILE}"
    expected = {s["name"]: s["bytes"] for s in stats["shards"]}
    found = {n for n in listing if n.startswith(f"{split}.tfrecord-")}
    missing, extra = sorted(expected.keys() - found), sorted(found - expected.keys())
    if missing:
      return f"task {task} shard {missing[0]} is missing"
    if extra:
      return f"task {task} has shard {extra[0]}, which its stats do not list"
    for name, size in expected.items():
      if listing[name].stat().length != size:
        return f"task {task} shard {name} is not the size its stats give ({size} bytes)"
  return None


def _tfrecords(path: str) -> Iterator[bytes]:
  """The records of a TFRecord file (framing: length u64, its CRC u32, data, data CRC u32;
  the file's size was checked against the stats at registration)."""
  data = paths.Path(path).read_bytes()
  pos = 0
  while pos < len(data):
    (size,) = struct.unpack_from("<Q", data, pos)
    yield data[pos + 12:pos + 12 + size]
    pos += 16 + size


class TokenizedSource(seqio.DataSource):
  """A task's token stream, read from its cache in shard order (one record per line):
  {"targets": int32 [n]}, the tokens of `LINES_PER_READ` lines at a time, or of the whole
  split when it has at most `IN_MEMORY_BYTES` (read when the dataset is made).

  Parsing records in batches is what makes the cache fast (one `tf.io.parse_example` per
  batch instead of one op per line; docs/benchmarks.md); the task's
  `preprocessors.chunk_token_runs` cuts the stream. Data shards are dealt lines, as the raw
  text is (`pipeline._read_task`), so either gives one host the same stream.
  """

  def __init__(self, task_dir: str, stats: Mapping[str, dict[str, Any]], written: str = ""):
    self.task_dir = task_dir
    self.written = written  # changes when the cache is written again (its mixture.json's key)
    self.files = {split: [paths.join(task_dir, s["name"]) for s in st["shards"]]
                  for split, st in stats.items()}   # each split's shards, in line order
    self.records = {split: [s["records"] for s in st["shards"]]
                    for split, st in stats.items()}  # their lines
    self.bytes = {split: sum(s["bytes"] for s in st["shards"]) for split, st in stats.items()}
    super().__init__(splits=tuple(stats),
                     num_input_examples={split: st["examples"] for split, st in stats.items()},
                     caching_permitted=False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True  # by lines, before the lines are batched

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    del shuffle, seed, sequence_length, use_cached, num_epochs
    shards = shard_info.num_shards if shard_info else 1
    spec = {"targets": tf.io.RaggedFeature(tf.int64)}

    def tokens(serialized):  # [k] examples -> {"targets": int32 [their tokens]}
      ids = tf.io.parse_example(serialized, spec)["targets"].flat_values
      return {"targets": tf.cast(ids, tf.int32)}

    dealt = sources.dealt(split, self.num_input_examples(split), shard_info)
    if self.bytes[split] > IN_MEMORY_BYTES:
      records = tf.data.TFRecordDataset(self.files[split])
      if dealt:
        records = records.shard(shards, shard_info.index)
      return records.batch(LINES_PER_READ).map(tokens)
    # A small language is read now, whole: a stream that repeats it would otherwise reopen
    # its files every few chunks. Read without tf.data, whose functions would be traced
    # again for each of a thousand languages.
    serialized = [r for f in self.files[split] for r in _tfrecords(f)]
    if dealt:
      serialized = serialized[shard_info.index::shards]
    return tf.data.Dataset.from_tensors(tokens(tf.constant(serialized, tf.string,
                                                           [len(serialized)])))

  def __str__(self) -> str:
    return f"TokenizedSource({self.task_dir})"


def _dealt_tokens(source: TokenizedSource, split: str,
                  shard: seqio.ShardInfo) -> Iterator[np.ndarray]:
  """The tokens of the lines of `split` that `shard` reads (`_block`), int32, in parts: only
  the cache's files that hold them are read."""
  counts = source.records[split]  # records (lines) per file
  start, stop = _block(split, sum(counts), shard)
  spec = {"targets": tf.io.RaggedFeature(tf.int64)}
  for path, first, count in zip(source.files[split], np.cumsum([0, *counts]), counts):
    if first < stop and start < first + count:
      serialized = list(itertools.islice(_tfrecords(path), max(start - first, 0),
                                         min(stop - first, count)))
      for i in range(0, len(serialized), 1 << 16):
        ids = tf.io.parse_example(serialized[i:i + (1 << 16)], spec)["targets"].flat_values
        yield ids.numpy().astype(np.int32)


def _block(split: str, num_lines: int, shard: seqio.ShardInfo) -> tuple[int, int]:
  """The lines [start, stop) of a task's split that `shard`'s token streams hold: its
  `sources.dealt_block`, or all of them."""
  if sources.dealt(split, num_lines, shard):
    return sources.dealt_block(num_lines, shard)
  return 0, num_lines


def _dealt_lines(task: seqio.Task, split: str, shard: seqio.ShardInfo) -> Iterator[bytes]:
  """The non-blank lines of text task `task`'s `split` that `shard` reads (`_block`),
  stripped."""
  source = task.source
  lines = (line for r in source.ranges(split, PART_BYTES) for line in sources.read_range(r))
  return (line.strip() for line in itertools.islice(
      lines, *_block(split, source.num_input_examples(split), shard)))


def _encode(vocabulary: vocab_lib.Vocabulary, lines: list[tuple[int, bytes]]
            ) -> Iterator[tuple[int, np.ndarray]]:
  """(task, line) pairs, in task order -> (task, its lines' ids, each line's followed by
  `</s>`), as `preprocessors.tokenize_lines` makes them: one SentencePiece call for all."""
  ids, lengths = vocabulary.encode_many([line for _, line in lines])
  ids = np.insert(ids, np.cumsum(lengths), np.int32(vocabulary.eos_id))
  owners = np.fromiter((i for i, _ in lines), np.int64, len(lines))
  firsts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
  ends = np.cumsum(lengths + 1)[np.r_[firsts[1:], len(lines)] - 1]
  yield from zip(owners[firsts].tolist(), np.split(ids, ends[:-1]))


def _tokens(tasks: Sequence[seqio.Task], split: str, shard: seqio.ShardInfo
            ) -> Iterator[tuple[int, np.ndarray]]:
  """(i, tokens of task i that `shard` is dealt), in task order, a part at a time: read from
  a cache, or tokenized from text `LINES_PER_ENCODE` lines at a time, of one language or of
  many small ones, by SentencePiece's threads (one per core)."""
  lines: list[tuple[int, bytes]] = []
  for i, task in enumerate(tasks):
    if isinstance(task.source, TokenizedSource):
      yield from _encode(task.output_features["targets"].vocabulary, lines) if lines else ()
      lines = []
      yield from ((i, part) for part in _dealt_tokens(task.source, split, shard))
      continue
    for line in _dealt_lines(task, split, shard):
      lines.append((i, line))
      if len(lines) == LINES_PER_ENCODE:
        yield from _encode(task.output_features["targets"].vocabulary, lines)
        lines = []
  if lines:
    yield from _encode(tasks[-1].output_features["targets"].vocabulary, lines)


def _made_from(task: seqio.Task, split: str) -> list[Any]:
  """What a task's token stream is made from: its cache's files, or its text and vocabulary."""
  source = task.source
  if isinstance(source, TokenizedSource):
    return [task.name, source.task_dir, source.written, source.files[split],
            source.bytes[split], source.num_input_examples(split)]
  vocabulary = task.output_features["targets"].vocabulary
  return [task.name, source.fingerprint, source.num_input_examples(split),
          vocabulary.sha256]


def streamable(task: seqio.Task) -> bool:
  """Whether `load_corpus` reads `task`: a tokenized cache's, or a text corpus's."""
  return isinstance(task.source, (TokenizedSource, sources.LineSource))


def load_corpus(tasks: Sequence[seqio.Task], split: str, shard: seqio.ShardInfo
                ) -> streams.Corpus:
  """The tokens of `tasks` that data shard `shard` reads (each task's block of lines,
  `sources.dealt_block`), one stream per task: one flat int32 file in the local cache
  (`$POLYGLOT_CACHE/streams`), made on first use and memory-mapped. A task's tokens are read
  from the files of its cache that hold the block (once per host, from a bucket too), or
  its text is tokenized (`_tokens`)."""
  key = _sha256(json.dumps(["streams", STREAMS_FORMAT, split, shard.index, shard.num_shards,
                            [_made_from(t, split) for t in tasks]]).encode())[:32]
  directory = cache.cache_dir(STREAMS_DIR)
  tokens_path, index_path = directory / f"{key}.int32", directory / f"{key}.json"
  offsets = _read_json(index_path)
  if offsets is None or not tokens_path.exists() or tokens_path.stat().st_size != 4 * offsets[-1]:
    sizes = np.zeros(len(tasks), np.int64)
    partial = directory / f"{key}.int32.{os.getpid()}.partial"
    try:
      with open(partial, "wb") as f:
        for i, part in _tokens(tasks, split, shard):
          f.write(part.tobytes())
          sizes[i] += len(part)
      offsets = [0, *np.cumsum(sizes).tolist()]
      os.replace(partial, tokens_path)
      paths.write_text(index_path, json.dumps(offsets))
    except OSError as e:
      partial.unlink(missing_ok=True)
      raise DataError(f"cannot write the token streams of data shard {shard.index} to "
                      f"{directory} ({e.strerror}): free space there, or set "
                      f"${cache.CACHE_ENV} to a local disk with room") from None
  names = tuple(t.name for t in tasks)
  if not offsets[-1]:
    return streams.Corpus(np.zeros(0, np.int32), np.asarray(offsets, np.int64), names)
  return streams.Corpus(np.memmap(tokens_path, np.int32, "r"), np.asarray(offsets, np.int64),
                        names, os.fspath(tokens_path))


def describe(path: str) -> dict[str, Any]:
  """The mixture.json of the tokenized corpus at `path`, checked."""
  path = paths.resolve(path)
  description = _read_json(paths.join(path, MIXTURE_FILE))
  if description is None:
    raise DataError(f"{path} is not a tokenized corpus (no readable {MIXTURE_FILE}, or its "
                    "job did not finish): " + _FIX.format(dir=path))
  if description.get("format") != FORMAT:
    raise DataError(f"tokenized corpus {path} has format {description.get('format')}, this "
                    f"polyglot reads {FORMAT}: " + _FIX.format(dir=path))
  return description


def register(path: str, *, name: str | None = None, alpha: float | None = None,
             vocabulary: vocab_lib.Vocabulary | None = None) -> seqio.Mixture:
  """Registers the tokenized corpus at `path` as the mixture `name` (default:
  `<the name it was written under>_tokenized`, beside the raw corpus), with tasks
  `<name>.<key>` in the written order and the written sizes;
  `alpha` defaults to the written one. `vocabulary`, when given, must be the one the cache
  holds."""
  path = paths.resolve(path)
  description = describe(path)
  model = paths.Path(paths.join(path, VOCABULARY_FILE))
  if not model.exists() or _sha256(model.read_bytes()) != description["vocabulary"]:
    raise DataError(f"tokenized corpus {path}: {VOCABULARY_FILE} is missing or is not the "
                    "vocabulary its tasks were tokenized with: " + _FIX.format(dir=path))
  cached_vocabulary = vocab_lib.Vocabulary(model.read_bytes(), name=os.fspath(model))
  if vocabulary is not None and vocabulary != cached_vocabulary:
    raise DataError(f"tokenized corpus {path} was tokenized with {cached_vocabulary.name}, not "
                    f"{vocabulary.name}: tokenize the corpus again with that vocabulary "
                    "(tools/cache_tasks.py), or drop the vocabulary setting")
  name = name or f"{description['name']}_tokenized"
  written = cache.file_key(paths.join(path, MIXTURE_FILE))  # the write job's last file
  task_sources, sizes = {}, {}
  for task in description["tasks"]:
    problem = _task_problem(path, task["name"], vocabulary_sha=description["vocabulary"])
    if problem:
      raise DataError(f"tokenized corpus {path}: {problem}; " + _FIX.format(dir=path))
    task_dir = paths.join(path, task["name"])
    splits = [p.name[len("stats."):-len(".json")] for p in paths.Path(task_dir).iterdir()
              if p.name.startswith("stats.")]
    stats = {s: _read_json(seqio.utils.get_cached_stats_path(task_dir, s)) for s in sorted(splits)}
    task_sources[task["key"]] = TokenizedSource(task_dir, stats, written)
    sizes[task["key"]] = task["size"]
  if alpha is None:
    alpha = description["alpha"]
  return mixtures.register_corpus(
      name, task_sources, sizes, alpha=alpha, vocabulary=cached_vocabulary,
      spec=("tokenized", path, json.dumps(description, sort_keys=True)),
      task_preprocessors=preprocessors.CACHED_TEXT_PREPROCESSORS)


def check_part_bytes(part_bytes: int) -> None:
  if part_bytes < 1:
    raise ConfigError(f"part_bytes={part_bytes} is invalid: use >= 1 (default {PART_BYTES})")
