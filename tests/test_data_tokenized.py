"""Tokenized corpora: the Beam job's cache, and the text tokenized into the local token
file, give each language the raw pipeline's chunks in the raw order at the mixture's rates
(training, `polyglot.data.streams`; the same batches from either), and the cache gives the
raw batches bit for bit (validation); a cache that is partial, stale or of another vocabulary
is refused in one line."""
import gzip
import json
import os
import pathlib

import numpy as np
import pytest

from polyglot import paths
from polyglot.data import pipeline, preprocessors, sources, streams, tokenized
from polyglot.errors import DataError
import seqio
import tasks
import tensorflow as tf

UDHR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def _batches(mixture, n, **kwargs):
  args = dict(length=24, batch_size=6, seed=3, shard_index=0, num_shards=1)
  args.update(kwargs)
  it = pipeline.make_iterator(mixture, **args)
  return list(it) if n is None else [next(it) for _ in range(n)]  # None: a finite split whole


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory, corpus):
  """Three languages: a plain file of many lines (blank ones too), cut into many parts;
  a `.gz` file (one part per split); a short file."""
  d = tmp_path_factory.mktemp("text")
  eng = list(corpus.texts["eng_Latn"]) * 6
  eng = [l if i % 7 else "" for i, l in enumerate(eng)]  # blank lines are not records
  (d / "eng_Latn.txt").write_text("\n".join(eng) + "\n", encoding="utf-8")
  with gzip.open(d / "swh_Latn.txt.gz", "wt", encoding="utf-8") as f:
    f.write("\n".join(corpus.texts["swh_Latn"] * 3))  # no final line break
  (d / "cmn_Hans.txt").write_text("\n".join(corpus.texts["cmn_Hans"]), encoding="utf-8")
  return d


@pytest.fixture(scope="module")
def raw(text_dir):
  return tasks.register_text_directory(text_dir, name="tok_raw")


@pytest.fixture(scope="module")
def cached(raw, tmp_path_factory):
  """The raw mixture `tok_raw` cached in 2 kB parts by the Beam job (DirectRunner) and
  registered from the cache alone as `tok_cached`."""
  out = tmp_path_factory.mktemp("cache") / "tok"
  description = tokenized.write(raw.name, str(out), part_bytes=2048)
  tasks.register_tokenized(out, name="tok_cached")
  return out, description


@pytest.mark.parametrize("read_bytes", [7, sources.READ_BYTES])
@pytest.mark.parametrize("task", ["tok_raw.eng_Latn", "tok_raw.swh_Latn"])
def test_parts_of_a_text_file_hold_its_lines_once_in_order(raw, task, read_bytes, monkeypatch):
  """tf.data's lines, in parts cut anywhere, read in blocks that end anywhere."""
  monkeypatch.setattr(sources, "READ_BYTES", read_bytes)
  source = seqio.get_mixture_or_task(task).source
  for split in ("validation", "train"):
    expected = list(source.get_dataset(split).as_numpy_iterator())
    for part_bytes in (1, 100, 2048, 1 << 30):
      got = [line for r in source.ranges(split, part_bytes) for line in sources.read_range(r)]
      assert got == expected, (split, part_bytes)


def test_cache_has_seqio_layout_and_sizes(cached):
  out, description = cached
  assert [t["key"] for t in description["tasks"]] == ["cmn_Hans", "eng_Latn", "swh_Latn"]
  eng = out / "tok_raw.eng_Latn"
  assert (eng / "COMPLETED").exists() and (out / "vocabulary.model").exists()
  stats = json.loads((eng / "stats.train.json").read_text())
  assert len(stats["shards"]) > 3  # the plain file in several parts
  assert [s["name"] for s in stats["shards"]] == [
      f"train.tfrecord-{i:05d}-of-{len(stats['shards']):05d}" for i in range(len(stats["shards"]))]
  # One record per non-blank line.
  source = seqio.get_mixture_or_task("tok_raw.eng_Latn").source
  assert stats["examples"] == sum(1 for _ in source.get_dataset("train")) == 38
  info = json.loads((eng / "info.train.json").read_text())
  assert info["features"] == {"targets": {"shape": [None], "dtype": "int32"}}
  # seqio's own reader (its global cache dirs) reads the raw task from the cache: the same
  # chunks as from the text (one shard: seqio's interleaving keeps the order).
  seqio.add_global_cache_dirs([str(out)])
  task = seqio.get_mixture_or_task("tok_raw.swh_Latn")
  theirs, ours = (task.get_dataset({"targets": 40}, split="validation", use_cached=cached,
                                   shuffle=False) for cached in (True, False))
  theirs, ours = ([x["targets"].tolist() for x in d.as_numpy_iterator()] for d in (theirs, ours))
  assert theirs == ours and len(ours) > 1


def _raw_chunks(language: str, count: int, shard_index: int, num_shards: int) -> list[tuple]:
  """The first `count` training chunks (c = 22) of `language`'s raw text read by a shard,
  the reference: tf.data's tokenizing of every training line; the shard's contiguous block
  of them (all, for a language of fewer lines than shards); their tokens repeated, cut."""
  task = seqio.get_mixture_or_task(f"tok_raw.{language}")
  lines = [x["targets"] for x in preprocessors.tokenize_lines(
      task.source.get_dataset("train"), task.output_features).as_numpy_iterator()]
  n = len(lines)
  if n >= num_shards:
    lines = lines[shard_index * n // num_shards:(shard_index + 1) * n // num_shards]
  tokens = np.concatenate(lines)
  tokens = np.tile(tokens, -(-count * 22 // len(tokens)))
  return [tuple(tokens[i * 22:(i + 1) * 22]) for i in range(count)]


def _languages_of(batches, shard_index: int, num_shards: int) -> dict[str, list[tuple]]:
  """Each language's chunks in the rows of `batches`, in row order (a row's language: the
  one whose raw chunks hold its text)."""
  rows = [tuple(r[1:-1]) for b in batches for r in b["targets"]]
  raw = {k: set(_raw_chunks(k, len(rows), shard_index, num_shards)) for k in LANGUAGES}
  out = {k: [] for k in LANGUAGES}
  for row in rows:
    (language,) = [k for k in LANGUAGES if row in raw[k]]
    out[language].append(row)
  return out


LANGUAGES = ("cmn_Hans", "eng_Latn", "swh_Latn")


@pytest.mark.parametrize("source", ["tok_cached", "tok_raw"], ids=["cache", "text"])
@pytest.mark.parametrize("shard", [(0, 1), (1, 2), (11, 12)])
def test_training_gives_each_language_its_raw_chunks_in_order_at_the_rates(cached, shard,
                                                                           source):
  """From the cache, or from the text tokenized into the token file; shard 11 of 12 reads
  a block of the lines of `eng` and `swh` and all of `cmn` (10 lines)."""
  index, count = shard
  batches = _batches(source, 40, batch_size=50, shuffle_buffer=0, shard_index=index,
                     num_shards=count)
  for b in batches:
    assert (b["targets"][:, 0] == 0).all() and (b["targets"][:, -1] == 2).all()
    assert (b["segment_ids"] == 1).all() and (b["positions"] == np.arange(24)).all()
  taken = _languages_of(batches, index, count)
  mixture = seqio.get_mixture_or_task("tok_cached")
  for language, chunks in taken.items():
    assert chunks == _raw_chunks(language, len(chunks), index, count), language
    rate = mixture.get_rate(seqio.get_mixture_or_task(f"tok_cached.{language}"))
    rate /= sum(mixture.get_rate(t) for t in mixture.tasks)
    sigma = (2000 * rate * (1 - rate)) ** 0.5
    assert abs(len(chunks) - 2000 * rate) < 4 * sigma, (language, len(chunks), rate)
  raw = seqio.get_mixture_or_task("tok_raw")
  assert ({t.name.split(".")[1]: mixture.get_rate(t) for t in mixture.tasks}
          == {t.name.split(".")[1]: raw.get_rate(t) for t in raw.tasks})


def test_a_data_shard_reads_only_the_cache_files_of_its_block(cached, tmp_path, monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path))
  read = []
  tfrecords = tokenized._tfrecords
  monkeypatch.setattr(tokenized, "_tfrecords", lambda path: read.append(path) or tfrecords(path))
  task = seqio.get_mixture_or_task("tok_cached.eng_Latn")
  files = task.source.files["train"]
  for index in range(2):
    read.clear()
    tokenized.load_corpus([task], "train", seqio.ShardInfo(index, 2))
    assert 0 < len(read) <= len(files) // 2 + 1 and read == sorted(read), (read, files)


@pytest.mark.parametrize("kwargs", [{}, {"shard_index": 1, "num_shards": 2}])
def test_training_from_the_text_and_from_its_cache_gives_the_same_batches(cached, kwargs):
  """The same token streams, drawn and masked with the same keys."""
  _assert_same(_batches("tok_raw", 5, shuffle_buffer=8, **kwargs),
               _batches("tok_cached", 5, shuffle_buffer=8, **kwargs))


def test_cached_training_shuffles_each_window_of_a_language(cached):
  """With a window of 8 chunks, a language's chunks come out window by window, each window
  in a shuffled order of the raw one's chunks."""
  batches = _batches("tok_cached", 40, batch_size=50, shuffle_buffer=8)
  shuffled = 0
  for language, chunks in _languages_of(batches, 0, 1).items():
    raw = _raw_chunks(language, len(chunks), 0, 1)
    for w in range(0, len(chunks) // 8 * 8, 8):
      assert sorted(chunks[w:w + 8]) == sorted(raw[w:w + 8]), (language, w)
      shuffled += chunks[w:w + 8] != raw[w:w + 8]
  assert shuffled > 100


@pytest.mark.parametrize("in_memory", [True, False], ids=["read_whole", "streamed"])
@pytest.mark.parametrize("kwargs", [{}, {"shard_index": 1, "num_shards": 2}])
def test_cached_validation_batches_equal_raw_batches(cached, kwargs, in_memory, monkeypatch):
  """Languages read whole at build time (small ones) or streamed a batch of lines at a time."""
  if not in_memory:
    monkeypatch.setattr(tokenized, "IN_MEMORY_BYTES", 0)
  kwargs = {"split": "validation", **kwargs}
  _assert_same(_batches("tok_cached", None, **kwargs), _batches("tok_raw", None, **kwargs))


def test_resume_from_the_cache_is_bit_identical(cached):
  """Also with other thread counts, and from a state that hands back batches read ahead;
  the state is the batch count and a counter per language."""
  it = pipeline.make_iterator("tok_cached", length=24, batch_size=6, seed=3, shard_index=0,
                              num_shards=1, num_threads=1)
  for _ in range(5):
    next(it)
  state = it.get_state()
  assert len(state) < 1024
  expected = [next(it) for _ in range(4)]
  assert len(it.state_with(tuple(expected[2:]))) < 1024
  rewound = it.state_with(tuple(expected[2:]))
  for threads, start, want in ((2, state, expected), (1, rewound, expected[2:])):
    again = pipeline.make_iterator("tok_cached", length=24, batch_size=6, seed=3,
                                   shard_index=0, num_shards=1, num_threads=threads)
    again.set_state(start)
    _assert_same([next(again) for _ in range(len(want))], want)


def test_worker_processes_end_with_the_iterator_and_a_dead_one_is_one_line(cached,
                                                                            monkeypatch):
  monkeypatch.setattr(streams, "BLOCK_TOKENS", 6 * 24 * 2)  # blocks of 2 batches
  it = pipeline.make_iterator("tok_cached", length=24, batch_size=6, shard_index=0,
                              num_shards=1, num_threads=2)
  next(it)
  workers = it._workers  # pylint: disable=protected-access
  # Each worker's shared file is unlinked once the worker has it open (other processes'
  # files may come and go meanwhile: only these are checked).
  assert all(not pathlib.Path(w.slots.filename).exists() for w in workers)
  procs = [w._proc for w in workers]  # pylint: disable=protected-access
  procs[1].kill()
  with pytest.raises(DataError, match=r"a data worker process exited \(code -9"):
    for _ in range(20):
      next(it)
  it.close()
  assert all(p.poll() is not None for p in procs)


def test_a_tf_data_state_is_refused_by_the_stream(cached):
  raw = pipeline.HostIterator(pipeline.PipelineConfig("tok_raw", length=24, batch_size=6), 0, 1)
  next(raw)
  it = pipeline.make_iterator("tok_cached", length=24, batch_size=6, shard_index=0, num_shards=1)
  with pytest.raises(DataError, match="unreadable as a token-stream state"):
    it.set_state(raw.get_state())
  other = pipeline.make_iterator("tok_cached", length=24, batch_size=6, seed=9, shard_index=0,
                                 num_shards=1)
  with pytest.raises(DataError, match="restore with the settings it was saved with"):
    it.set_state(other.get_state())


def test_token_streams_are_written_once_and_rewritten_when_damaged(cached, tmp_path,
                                                                   monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path))
  first = _batches("tok_cached", 3)
  (tokens,) = (tmp_path / "streams").glob("*.int32")
  written = tokens.stat().st_mtime_ns
  _assert_same(_batches("tok_cached", 3), first)
  assert tokens.stat().st_mtime_ns == written  # memory-mapped again, not rewritten
  tokens.write_bytes(tokens.read_bytes()[:-4])
  _assert_same(_batches("tok_cached", 3), first)
  assert len(list((tmp_path / "streams").iterdir())) == 2


def test_a_changed_text_file_is_tokenized_again(tmp_path, corpus, monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path / "cache"))
  text = tmp_path / "text" / "eng_Latn.txt"
  text.parent.mkdir()
  text.write_text("\n".join(corpus.texts["eng_Latn"]), encoding="utf-8")
  tasks.register_text_directory(text.parent, name="tok_changed")
  first = _batches("tok_changed", 2, shuffle_buffer=0)
  modified = text.stat().st_mtime_ns
  text.write_text("\n".join(corpus.texts["eng_Latn"][::-1]), encoding="utf-8")  # same size
  os.utime(text, ns=(modified + 10**9, modified + 10**9))
  second = _batches("tok_changed", 2, shuffle_buffer=0)
  assert len(list((tmp_path / "cache" / "streams").glob("*.int32"))) == 2
  assert (first[0]["targets"] != second[0]["targets"]).any()


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  paths.copy_tree(src, dst)
  return dst


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "mixture.json").unlink(), "no readable mixture.json"),
    (lambda d: next(d.glob("tok_raw.eng_Latn/train.tfrecord-00001-*")).unlink(),
     "task tok_raw.eng_Latn shard train.tfrecord-00001-of-"),
    (lambda d: (d / "tok_raw.cmn_Hans" / "COMPLETED").unlink(),
     "task tok_raw.cmn_Hans is not (completely) written"),
    (lambda d: next(d.glob("tok_raw.swh_Latn/train.tfrecord-00000-*")).write_bytes(b"x"),
     "is not the size its stats give"),
    (lambda d: (d / "vocabulary.model").write_bytes(b"other"),
     "is not the vocabulary its tasks were tokenized with"),
])
def test_a_damaged_cache_is_one_line_naming_the_fix(cached, tmp_path, damage, words):
  out = _copy(cached[0], tmp_path / "copy")
  damage(out)
  with pytest.raises(DataError, match="tools/cache_tasks.py") as e:
    tasks.register_tokenized(out, name="tok_damaged")
  assert words in str(e.value) and "\n" not in str(e.value)


def test_another_vocabulary_is_refused(cached, corpus):
  from polyglot.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  other = vocab_lib.train(corpus.texts["eng_Latn"] + corpus.texts["fra_Latn"],
                          vocab_lib.VocabConfig(vocab_size=200))
  with pytest.raises(DataError, match="was tokenized with .* tokenize the corpus again"):
    tasks.register_tokenized(cached[0], name="tok_other", vocabulary=other)


def test_writing_again_finishes_a_partial_cache(cached, tmp_path):
  out = _copy(cached[0], tmp_path / "partial")
  (out / "tok_raw.cmn_Hans" / "COMPLETED").unlink()
  (out / "mixture.json").unlink()
  parts, _ = tokenized.plan("tok_raw", str(out), part_bytes=2048)
  assert {p.task for p in parts} == {"tok_raw.cmn_Hans"}
  assert tokenized.write("tok_raw", str(out), part_bytes=2048) == cached[1]
  tasks.register_tokenized(out, name="tok_rewritten")
  _assert_same(_batches("tok_rewritten", 3), _batches("tok_cached", 3))


@pytest.mark.skipif(not UDHR.is_dir(), reason=f"shared UDHR corpus not at {UDHR}")
def test_udhr_corpus_cached_by_the_beam_job_holds_every_line(tmp_path, vocab):
  """The 390-language UDHR corpus through the DirectRunner: every task's records are its
  raw lines, tokenized, in order, and the cached mixture samples at the raw rates."""
  raw = tasks.register_text_directory(UDHR, name="udhr_raw")
  tokenized.write("udhr_raw", str(tmp_path / "udhr"))
  cached = tasks.register_tokenized(tmp_path / "udhr", name="udhr_cached")
  assert len(cached.tasks) == 390
  tokenize = preprocessors.tokenize_batch(vocab)
  for task in raw.tasks:
    key = task.name.split(".", 1)[1]
    for split in task.source.splits:
      lines = [l for r in task.source.ranges(split, 1 << 30) for l in sources.read_range(r)]
      records = [r for f in sorted((tmp_path / "udhr" / task.name).glob(f"{split}.tfrecord-*"))
                 for r in tokenized._tfrecords(str(f))]  # pylint: disable=protected-access
      ids = [tf.train.Example.FromString(r).features.feature["targets"].int64_list.value
             for r in records]
      assert [list(x) for x in ids] == tokenize(tf.constant(lines)).to_list(), (key, split)
    assert cached.get_rate(seqio.get_mixture_or_task(f"udhr_cached.{key}")) == raw.get_rate(task)
