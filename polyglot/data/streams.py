"""Training batches from tokenized corpora, made by index: numpy, in threads, tiny state.

A data shard of a tokenized corpus (`polyglot.data.tokenized`) is a `Corpus`: every
language's dealt lines, tokenized, concatenated into one stream of ids (one flat int32
array, memory-mapped from the local cache). Batch `b` of a shard seeded `seed`:

1. Languages: each row draws its language from the mixture's rates (Philox keyed by
   `seed` and `b`, `draw_languages`).
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
pipeline of a thousand languages is a memory map), and batches are made by a pool of
threads a block at a time: numpy releases the GIL in its loops, so blocks of about
`BLOCK_TOKENS` tokens keep every core busy (docs/benchmarks.md).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import math
import os
from typing import Any, Iterator, Sequence

import numpy as np

from polyglot.data import masking
from polyglot.data import vocab as vocab_lib
from polyglot.errors import DataError

BLOCK_TOKENS = 1 << 17     # tokens one thread makes at a time
_DRAW_COUNTER = (0, 0, 0, 1)  # language draws: Philox counters apart from masking's
_STATE_FORMAT = 1
_U64 = np.uint64


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """A data shard's language streams: language j is `tokens[offsets[j]:offsets[j + 1]]`."""
  tokens: np.ndarray   # int32 [total tokens], usually memory-mapped
  offsets: np.ndarray  # int64 [languages + 1]
  names: tuple[str, ...]

  @property
  def sizes(self) -> np.ndarray:
    return np.diff(self.offsets)


def draw_languages(seed: int, index: int, cdf: np.ndarray, rows: int) -> np.ndarray:
  """The languages of batch `index`'s rows, int64 [rows], drawn at the rates whose
  cumulative sums are `cdf` [languages]."""
  rng = np.random.Generator(np.random.Philox(key=(seed << 64) | index, counter=_DRAW_COUNTER))
  return np.minimum(np.searchsorted(cdf, rng.random(rows), side="right"), len(cdf) - 1)


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

  def __post_init__(self):
    empty = [n for n, size, rate in zip(self.corpus.names, self.corpus.sizes, self.rates)
             if size == 0 and rate > 0]
    if empty:
      raise DataError(f"language {empty[0]} has no training tokens in this data shard: drop it "
                      "from the corpus, or give it text")

  @property
  def cdf(self) -> np.ndarray:
    return np.cumsum(self.rates / self.rates.sum())


def make_batches(stream: Stream, first: int, languages: np.ndarray,
                 chunks: np.ndarray) -> list[dict[str, np.ndarray]]:
  """Batches `first`, `first + 1`, ... from their rows' languages and chunk numbers
  (int64 [batches * batch_size], in row order)."""
  b, l = stream.batch_size, stream.length
  positions = window_positions(chunks, languages, stream.seed, stream.window)
  rows = len(languages)
  targets = np.empty((rows, l), np.int32)
  targets[:, 0], targets[:, -1] = vocab_lib.BOS_ID, vocab_lib.EOS_ID
  targets[:, 1:-1] = gather_chunks(stream.corpus, languages, positions, l - 2)
  rngs = [masking.batch_rng(stream.seed, first + i) for i in range(rows // b)]
  input_ids, loss_weights = masking.mask_batch(targets, rngs, mask_id=stream.mask_id,
                                               word_start=stream.word_start, cfg=stream.mlm)
  segment_ids = np.ones((b, l), np.int32)
  positions_row = np.broadcast_to(np.arange(l, dtype=np.int32), (b, l))
  return [{"input_ids": input_ids[i:i + b], "targets": targets[i:i + b],
           "loss_weights": loss_weights[i:i + b], "segment_ids": segment_ids,
           "positions": positions_row} for i in range(0, rows, b)]


class StreamIterator:
  """A shard's training batches (`pipeline.HostIterator`'s interface), made ahead by
  `threads` threads a block of batches at a time."""

  def __init__(self, stream: Stream, identity: dict[str, Any], threads: int | None = None):
    self.stream = stream
    self._identity = {**identity, "reader": "streams", "streams_format": _STATE_FORMAT}
    self._cdf = stream.cdf
    self._threads = threads or len(os.sched_getaffinity(0))
    self._per_block = max(1, math.ceil(BLOCK_TOKENS / (stream.batch_size * stream.length)))
    self._pool = concurrent.futures.ThreadPoolExecutor(self._threads,
                                                       thread_name_prefix="polyglot-streams")
    self._reset(0, np.zeros(len(stream.rates), np.int64))

  @property
  def batch_size(self) -> int:
    return self.stream.batch_size

  def _reset(self, made: int, counts: np.ndarray) -> None:
    self._made, self._counts = made, counts           # after the batches returned
    self._next, self._next_counts = made, counts.copy()  # after the batches submitted
    self._blocks: collections.deque = collections.deque()
    self._ready: collections.deque = collections.deque()

  def _languages(self, first: int, count: int) -> np.ndarray:
    return np.concatenate([draw_languages(self.stream.seed, i, self._cdf, self.batch_size)
                           for i in range(first, first + count)])

  def _submit(self) -> None:
    while len(self._blocks) <= self._threads:
      languages = self._languages(self._next, self._per_block)
      chunks = chunk_numbers(languages, self._next_counts)
      np.add.at(self._next_counts, languages, 1)
      future = self._pool.submit(make_batches, self.stream, self._next, languages, chunks)
      self._blocks.append((future, languages.reshape(self._per_block, self.batch_size)))
      self._next += self._per_block

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if not self._ready:
      self._submit()
      future, languages = self._blocks.popleft()
      self._ready.extend(zip(future.result(), languages))
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
      raise DataError("data iterator state is not a tokenized-stream state (it was saved by "
                      "the tf.data pipeline, from raw text, or is damaged): resume with the "
                      "data settings it was saved with") from None
    if identity != json.loads(json.dumps(self._identity, sort_keys=True)):
      raise DataError(f"data iterator state was saved for {identity}, not {self._identity}: "
                      "restore with the settings it was saved with")
    self._reset(made, np.asarray(counts, np.int64))

  def close(self) -> None:
    self._pool.shutdown(wait=False, cancel_futures=True)
