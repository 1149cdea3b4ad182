"""Training batches from token streams, made by index: numpy, in worker processes.

A data shard of a text corpus or of its tokenized cache is a `Corpus`: every language's
block of lines (`sources.dealt_block`), tokenized, concatenated into one stream of ids
(one flat int32 array, memory-mapped from the local cache: `tokenized.load_corpus`).
Batch `b` of a shard seeded `seed`:

1. Languages: each row draws its language at the mixture's rates (SplitMix64 keyed by
   `seed`, `b` and the row: `draw_languages`).
2. Chunks: the row's language `j` gives its next chunk number `k` (a counter per
   language, `chunk_numbers`); with a shuffle window S, `k` is moved within its window of
   S consecutive chunks by a keyed bijection (`window_positions`), so the chunks of a
   window come out in a shuffled order, each once. Chunk `p` is the tokens
   [p*c, (p+1)*c) of the language's stream repeated forever (c = length - 2): the chunks
   of the raw pipeline's repeated stream (`preprocessors.chunk_token_runs`), in order
   when S <= 1.
3. Rows: `<s> chunk </s>`, one sequence per row (`segment_ids` 1, `positions` 0..l-1),
   as `MlmFeatureConverter` frames a full chunk.
4. Masking: `masking.mask_batch`, keyed by `seed` and `b` as in `pipeline.HostIterator`.

Per language, this gives the raw pipeline's chunks in the raw order and the mixture's
rates; the draws differ from tf.data's `sample_from_datasets` and shuffle buffer, so
batches are not those of the raw text. In exchange: no per-language state but a counter
(the state is the batch count and one integer per language, a few kB for a thousand
languages, saved and restored in microseconds), nothing to build per language (the
pipeline of a thousand languages is a memory map), and no serial stage: the parent
draws languages and chunk numbers (microseconds a block), `workers` processes make
blocks of about `BLOCK_TOKENS` tokens (`make_block`) into slots of a shared-memory file,
and the parent copies each block out in turn. Worker processes, not threads: numpy's
many short calls hand the GIL back and forth, and two threads made fewer batches than
one (docs/benchmarks.md). With one worker, a thread of this process makes the blocks.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
from typing import Any, Iterator, Sequence
import weakref

import numpy as np

from polyglot.data import ids, masking, schedules
from polyglot.errors import DataError

BLOCK_TOKENS = 1 << 17     # tokens a worker makes at a time
IN_FLIGHT = 4              # blocks requested ahead from each worker
_STATE_FORMAT = 2  # 2: data shards read blocks of lines (`sources.dealt_block`)
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)  # SplitMix64's increment
_DRAW_TAG = _U64(0x6C616E6775616765)  # the language draws' stream of a seed


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """A data shard's language streams: language j is `tokens[offsets[j]:offsets[j + 1]]`."""
  tokens: np.ndarray   # int32 [total tokens], memory-mapped from `path` when it is set
  offsets: np.ndarray  # int64 [languages + 1]
  names: tuple[str, ...]
  path: str | None = None

  def __getstate__(self):  # to a worker process: the file's name, not its tokens
    return {**self.__dict__, "tokens": None} if self.path else self.__dict__

  def __setstate__(self, state):
    if state["tokens"] is None:
      state = {**state, "tokens": np.memmap(state["path"], np.int32, "r")}
    self.__dict__.update(state)

  @property
  def sizes(self) -> np.ndarray:
    return np.diff(self.offsets)


def draw_languages(seed: int, first: int, batches: int, rows: int,
                   cdf: np.ndarray) -> np.ndarray:
  """The languages of the rows of batches `first`.. `first + batches - 1`, int64
  [batches * rows], drawn at the rates whose cumulative sums are `cdf` ([languages], or
  [batches, languages] when the rates change from batch to batch): row r of batch b draws
  SplitMix64's output number b * rows + r of the stream seeded `seed`, so a row's draw
  depends on nothing else."""
  start = _mix64(np.uint64(seed) ^ _DRAW_TAG)
  steps = np.arange(first * rows + 1, (first + batches) * rows + 1, dtype=_U64)
  with np.errstate(over="ignore"):
    u = (_mix64(start + steps * _GOLDEN) >> _U64(11)) * 2.0**-53  # [0, 1), 53 bits
  if cdf.ndim == 1:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
  u = u.reshape(batches, rows)
  return np.concatenate([np.minimum(np.searchsorted(c, x, side="right"), len(c) - 1)
                         for c, x in zip(cdf, u)])


def chunk_numbers(languages: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Each row's chunk number in its language, int64 [rows]: `counts[j]` chunks of language
  j were taken before these rows, which take theirs in row order."""
  order = np.argsort(languages, kind="stable")
  ordered = languages[order]
  rank = np.empty(len(languages), np.int64)
  rank[order] = np.arange(len(languages)) - np.searchsorted(ordered, ordered)
  return counts[languages] + rank


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64's finalizer: a bijection of uint64 that spreads every input bit."""
  with np.errstate(over="ignore"):
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
  return x ^ (x >> _U64(31))


def _permute(x: np.ndarray, keys: np.ndarray, size: int) -> np.ndarray:
  """x [n] in [0, size) -> a bijection of [0, size) for each key (uint64 [n]): three rounds
  of odd multiply-add and xorshift on the smallest power of two >= size, walking the cycle
  until the value is below `size`."""
  bits = max(1, (size - 1).bit_length())
  mask, shift = _U64((1 << bits) - 1), _U64(bits // 2 + 1)
  rounds = [(_mix64(keys + _U64(2 * r + 1)) | _U64(1), _mix64(keys + _U64(2 * r + 2)))
            for r in range(3)]
  y, todo = x.astype(_U64), np.ones(len(x), bool)
  with np.errstate(over="ignore"):
    while todo.any():
      v = y[todo]
      for mul, add in rounds:
        v = (v * mul[todo] + add[todo]) & mask
        v ^= v >> shift
      y[todo] = v
      todo = y >= _U64(size)
  return y.astype(np.int64)


def window_positions(chunks: np.ndarray, languages: np.ndarray, key: int,
                     window: int) -> np.ndarray:
  """Chunk numbers [rows] -> the chunks they read [rows]: within each window of `window`
  consecutive chunks of a language, a bijection keyed by (`key`, language, window)."""
  if window <= 1:
    return chunks
  start = chunks // window * window
  keys = _mix64(_mix64(_U64(key) ^ languages.astype(_U64)) ^ (start // window).astype(_U64))
  return start + _permute(chunks - start, keys, window)


def gather_chunks(corpus: Corpus, languages: np.ndarray, positions: np.ndarray,
                  c: int) -> np.ndarray:
  """Chunk `positions[i]` of language `languages[i]`: int32 [rows, c]."""
  sizes = corpus.sizes[languages][:, None]
  index = (positions * c)[:, None] % sizes + np.arange(c)
  index %= sizes
  index += corpus.offsets[languages][:, None]
  return np.take(corpus.tokens, index)


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
  """Everything that fixes a shard's batches."""
  corpus: Corpus
  rates: np.ndarray    # float64 [languages], summing to 1
  length: int
  batch_size: int
  seed: int            # the shard's seed (`pipeline.shard_seed`)
  window: int          # shuffle window in chunks; <= 1: in stream order
  mlm: masking.MlmConfig
  mask_id: int
  word_start: np.ndarray  # bool [vocabulary size]
  # Rates and masking that change with the batch index (= the step), from the mixture's
  # `sizes` [languages] and `alpha`; None: `rates` and `mlm` throughout.
  schedule: schedules.MixtureSchedule | None = None
  sizes: np.ndarray | None = None
  alpha: float = 0.0

  def __post_init__(self):
    rates = self.rates_at(np.asarray(self.schedule.steps if self.schedule else (0,)))
    empty = [n for n, size, rate in zip(self.corpus.names, self.corpus.sizes, rates.max(0))
             if size == 0 and rate > 0]
    if empty:
      raise DataError(f"language {empty[0]} has no training tokens in this data shard: drop it "
                      "from the corpus, or give it text")

  def rates_at(self, batches: np.ndarray) -> np.ndarray:
    """float64 [batches, languages]: the sampling rates of these batches."""
    if self.schedule is None:
      return np.broadcast_to(self.rates / self.rates.sum(), (len(batches), len(self.rates)))
    return self.schedule.rates(batches, self.sizes, self.alpha)

  def cdf(self, first: int, count: int) -> np.ndarray:
    """Cumulative rates of batches first.. first + count - 1: [languages] when fixed, else
    [count, languages]."""
    if self.schedule is None:
      return np.cumsum(self.rates / self.rates.sum())
    return np.cumsum(self.rates_at(np.arange(first, first + count)), -1)

  def mlm_at(self, batch: int) -> masking.MlmConfig:
    if self.schedule is None or not self.schedule.mask_rates:
      return self.mlm
    return dataclasses.replace(self.mlm, mask_rate=float(self.schedule.mask_rate(batch, 0.0)))


BLOCK_FIELDS = ("input_ids", "targets", "loss_weights")  # what a block's rows hold


def make_block(stream: Stream, first: int, languages: np.ndarray,
               chunks: np.ndarray) -> tuple[np.ndarray, ...]:
  """Batches `first`, `first + 1`, ... from their rows' languages and chunk numbers
  (int64 [rows], in row order): `BLOCK_FIELDS`, int32 [rows, l] each."""
  l = stream.length
  positions = window_positions(chunks, languages, stream.seed, stream.window)
  targets = np.empty((len(languages), l), np.int32)
  targets[:, 0], targets[:, -1] = ids.BOS_ID, ids.EOS_ID
  targets[:, 1:-1] = gather_chunks(stream.corpus, languages, positions, l - 2)
  batches = range(first, first + len(languages) // stream.batch_size)
  configs = [stream.mlm_at(b) for b in batches]
  input_ids, loss_weights = np.empty_like(targets), np.empty_like(targets)
  start = 0
  while start < len(configs):  # runs of batches with one masking rate, each in one pass
    end = start + 1
    while end < len(configs) and configs[end] == configs[start]:
      end += 1
    rows = slice(start * stream.batch_size, end * stream.batch_size)
    input_ids[rows], loss_weights[rows] = masking.mask_batch(
        targets[rows], [masking.batch_rng(stream.seed, b) for b in batches[start:end]],
        mask_id=stream.mask_id, word_start=stream.word_start, cfg=configs[start])
    start = end
  return input_ids, targets, loss_weights


def split_block(block: Sequence[np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
  """A block's `BLOCK_FIELDS` [rows, l] -> its batches, with `segment_ids` and `positions`
  of rows that each hold one sequence."""
  rows, l = block[0].shape
  segment_ids = np.ones((batch_size, l), np.int32)
  positions = np.broadcast_to(np.arange(l, dtype=np.int32), (batch_size, l))
  return [{**{k: v[i:i + batch_size] for k, v in zip(BLOCK_FIELDS, block)},
           "segment_ids": segment_ids, "positions": positions}
          for i in range(0, rows, batch_size)]


# glibc keeps a worker's freed blocks for the next block's arrays instead of returning them
# to the system: page faults were 15% of a worker's time (docs/benchmarks.md).
_WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def _shared_file(size: int) -> str:
  """A new file of `size` bytes in shared memory (/dev/shm where there is one)."""
  directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
  fd, path = tempfile.mkstemp(prefix="polyglot-streams-", dir=directory)
  os.ftruncate(fd, size)
  os.close(fd)
  return path


class _Process:
  """A worker process (`streams.serve()` in a fresh interpreter) making blocks of a stream's
  batches into `IN_FLIGHT` slots of a shared file: requests and replies are small pickles over
  its stdin and stdout, answered in order."""

  def __init__(self, stream: Stream, rows: int):
    shape = (IN_FLIGHT, len(BLOCK_FIELDS), rows, stream.length)  # slot, field, row, token
    path = _shared_file(int(np.prod(shape)) * 4)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, **_WORKER_MALLOC, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
      self.slots = np.memmap(path, np.int32, "r+", shape=shape)
      self._proc = subprocess.Popen(
          [sys.executable, "-c", "from polyglot.data import streams; streams.serve()"],
          env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
      self._send((stream, path, shape))
      self._reply()  # the worker has the file open: it can go
    finally:
      os.unlink(path)

  def _send(self, message) -> None:
    try:
      pickle.dump(message, self._proc.stdin, pickle.HIGHEST_PROTOCOL)
      self._proc.stdin.flush()
    except OSError:  # a broken pipe: the worker is gone
      self._died()

  def _reply(self):
    try:
      kind, value = pickle.load(self._proc.stdout)
    except (EOFError, pickle.UnpicklingError, OSError):
      self._died()
    if kind == "error":
      raise DataError(value)
    return value

  def _died(self):
    code = self._proc.wait()
    raise DataError(f"a data worker process exited (code {code}; its error is above): "
                    "rerun with PipelineConfig.num_threads=1 to make batches in-process")

  def submit(self, slot: int, *args) -> "functools.partial":
    self._send((slot, *args))
    return functools.partial(self._result, slot)

  def _result(self, slot: int) -> tuple[np.ndarray, ...]:
    self._reply()
    return tuple(np.array(field) for field in self.slots[slot])  # copied: the slot is reused

  def stop(self) -> None:
    if self._proc.poll() is None:
      self._proc.kill()
      self._proc.wait()


def serve() -> None:
  """A worker process: a `Stream` and its shared file, then (slot, first, languages,
  chunks) requests, each block made into its slot; it ends when its parent closes stdin."""
  requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
  os.dup2(2, 1)  # anything printed goes to stderr, not into the replies

  def reply(kind, value=None):
    pickle.dump((kind, value), replies, pickle.HIGHEST_PROTOCOL)
    replies.flush()

  try:
    stream, path, shape = pickle.load(requests)
    slots = np.memmap(path, np.int32, "r+", shape=shape)
    reply("ready")
    while True:
      slot, first, languages, chunks = pickle.load(requests)
      try:
        for out, field in zip(slots[slot], make_block(stream, first, languages, chunks)):
          out[:len(field)] = field
        reply("done")
      except Exception as e:  # pylint: disable=broad-except  (re-raised by the parent)
        reply("error", f"{type(e).__name__}: {e}")
  except (EOFError, BrokenPipeError):
    return


class StreamIterator:
  """A shard's training batches (`pipeline.HostIterator`'s interface), made ahead a block
  of batches at a time: by `workers` processes, or by a thread of this one when 1."""

  def __init__(self, stream: Stream, identity: dict[str, Any], workers: int | None = None):
    self.stream = stream
    self._identity = {**identity, "reader": "streams", "streams_format": _STATE_FORMAT}
    count = workers or len(os.sched_getaffinity(0))
    self._per_block = max(1, math.ceil(BLOCK_TOKENS / (stream.batch_size * stream.length)))
    rows = self._per_block * stream.batch_size
    if count == 1:
      self._workers = [concurrent.futures.ThreadPoolExecutor(1, "polyglot-streams")]
      self._close = functools.partial(self._workers[0].shutdown, False, cancel_futures=True)
    else:
      self._workers = []
      self._close = functools.partial(_stop_all, self._workers)
      self._workers.extend(_Process(stream, rows) for _ in range(count))
    self._finalizer = weakref.finalize(self, self._close)
    self._reset(0, np.zeros(len(stream.rates), np.int64))

  @property
  def batch_size(self) -> int:
    return self.stream.batch_size

  def _reset(self, made: int, counts: np.ndarray) -> None:
    for pending, _ in getattr(self, "_blocks", ()):  # a worker answers every request
      pending()
    self._made, self._counts = made, counts           # after the batches returned
    self._next, self._next_counts = made, counts.copy()  # after the batches submitted
    self._blocks: collections.deque = collections.deque()
    self._ready: collections.deque = collections.deque()

  def _languages(self, first: int, count: int) -> np.ndarray:
    return draw_languages(self.stream.seed, first, count, self.batch_size,
                          self.stream.cdf(first, count))

  def _submit(self) -> None:
    """Keeps `IN_FLIGHT` blocks in flight per worker, dealt to the workers in turn."""
    while len(self._blocks) < IN_FLIGHT * len(self._workers):
      languages = self._languages(self._next, self._per_block)
      chunks = chunk_numbers(languages, self._next_counts)
      np.add.at(self._next_counts, languages, 1)
      block, workers = self._next // self._per_block, len(self._workers)
      worker = self._workers[block % workers]
      if isinstance(worker, _Process):  # slots in turn: a slot is read before its reuse
        pending = worker.submit(block // workers % IN_FLIGHT, self._next, languages, chunks)
      else:
        pending = worker.submit(make_block, self.stream, self._next, languages, chunks).result
      self._blocks.append((pending, languages.reshape(self._per_block, self.batch_size)))
      self._next += self._per_block

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if not self._ready:
      self._submit()
      pending, languages = self._blocks.popleft()
      self._ready.extend(zip(split_block(pending(), self.batch_size), languages))
      self._submit()
    batch, languages = self._ready.popleft()
    self._made += 1
    np.add.at(self._counts, languages, 1)
    return batch

  def get_state(self) -> bytes:
    """The position after the last batch returned: its index and every language's count."""
    return self.state_with(())

  def state_with(self, pending: Sequence[dict[str, np.ndarray]]) -> bytes:
    """The state as if the last `len(pending)` batches returned were not yet returned."""
    made = self._made - len(pending)
    counts = self._counts.copy()
    if pending:
      np.subtract.at(counts, self._languages(made, len(pending)), 1)
    return json.dumps({"identity": self._identity, "made": made, "counts": counts.tolist()},
                      sort_keys=True).encode()

  def set_state(self, state: bytes) -> None:
    """Continues from `state` (from `get_state` of an iterator with the same settings)."""
    try:
      saved = json.loads(state)
      identity, made, counts = saved["identity"], int(saved["made"]), saved["counts"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
      raise DataError("data iterator state is unreadable as a token-stream state (it was "
                      "saved by the tf.data pipeline, or is damaged): resume with the data "
                      "settings it was saved with") from None
    if identity != json.loads(json.dumps(self._identity, sort_keys=True)):
      raise DataError(f"data iterator state was saved for {identity}, not {self._identity}: "
                      "restore with the settings it was saved with")
    self._reset(made, np.asarray(counts, np.int64))

  def close(self) -> None:
    """Stops the workers (also done when the iterator is collected, or at exit)."""
    self._finalizer()


def _stop_all(workers: Sequence[_Process]) -> None:
  for worker in workers:
    worker.stop()

