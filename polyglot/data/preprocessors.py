"""Preprocessing in TensorFlow: text -> the rows each objective reads.

MLM: text stream -> sequences -> packed, masked rows (below). TLM and pair
rows from tokenized translation pairs: `tlm_rows`, `pair_rows` (end of file).

Shapes: l = sequence length, c = l - 2 (stream tokens per sequence).

1. A task's preprocessors (one language): `tokenize_lines` tokenizes each
   line and appends `</s>` (fairseq ends every line with it); seqio's
   `CacheDatasetPlaceholder` marks what an offline cache stores
   (`polyglot.data.tokenized`); `chunk_stream` concatenates the language's
   lines into one stream and cuts it into chunks of c tokens, as XLM-R
   samples streams of text (section 3.1). A training stream repeats forever, so every training chunk is full; a finite stream
   (validation) ends in one shorter chunk.
2. `MlmFeatureConverter` (after mixing): frames each chunk as
   `<s> chunk </s>` and packs sequences into rows with seqio's packer
   (`segment_ids` 1.. per sequence, 0 on padding; `positions` restart at 0
   in each). The pipeline masks whole batches of rows afterwards
   (`polyglot.data.masking`).
"""
from __future__ import annotations

import functools
from typing import Mapping

from polyglot import _env
from polyglot.data import sources
from polyglot.data import vocab as vocab_lib
from polyglot.data.masking import MlmConfig  # noqa: F401  (a stream's setting, re-exported)
from polyglot.errors import ConfigError

tf = _env.import_tensorflow()
import seqio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@functools.lru_cache(maxsize=None)
def _tokenize_line(vocab: vocab_lib.Vocabulary):
  """Line -> its ids and `</s>` (nothing for a blank line); traced once for every language."""

  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def tokenize_line(line):
    text = tf.strings.strip(line)
    ids = tf.cast(vocab.encode_tf(text), tf.int32)
    eos = tf.fill([tf.cast(text != "", tf.int32)], vocab.eos_id)
    return {"targets": tf.concat([ids, eos], 0)}

  return tokenize_line


@functools.lru_cache(maxsize=None)
def tokenize_batch(vocab: vocab_lib.Vocabulary):
  """Lines [n] -> ids [n, None] (ragged): `_tokenize_line` of every line in one call, for
  writing a tokenized cache."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def tokenize(lines):
    text = tf.strings.strip(lines)
    ids = tf.cast(vocab.encode_tf(text), tf.int32)
    has_eos = tf.cast(text != "", tf.int64)
    eos = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(has_eos)], tf.constant(vocab.eos_id, tf.int32)), has_eos)
    return tf.concat([ids, eos], axis=1)

  return tokenize


def tokenize_lines(dataset: tf.data.Dataset,
                   output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
  """Lines (or dicts with `text`) -> {"targets": int32 [n]}: each line's ids and `</s>`,
  one element per line (sources skip blank lines, which would add no token).

  The task's step before seqio's `CacheDatasetPlaceholder`: what
  `polyglot.data.tokenized` stores, once, for a corpus read many times.
  """
  tokenize_line = _tokenize_line(output_features["targets"].vocabulary)
  return sources.text_lines(dataset).map(tokenize_line)


def chunk_stream(dataset: tf.data.Dataset,
                 sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """{"targets": [n]} per line -> {"targets": int32 [<= l - 2]} chunks of the stream.

  `MlmFeatureConverter` frames each chunk as `<s> chunk </s>`: one traced
  function for the whole mixture instead of one per language.
  """
  length = sequence_length["targets"]
  if length <= 2:
    raise ConfigError(f"sequence length {length} is invalid: use > 2 (<s>, tokens, </s>)")
  return dataset.unbatch().batch(length - 2)  # unbatch: one element per token


def chunk_token_runs(dataset: tf.data.Dataset,
                     sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """{"targets": [n]} runs of a stream's tokens (many lines each) -> the chunks of
  `chunk_stream`.

  A stream that never ends (training) is cut a run at a time, carrying the remainder
  (fewer than c tokens) to the next: chunks of static shape [c], no per-token elements.
  A finite one goes through `chunk_stream`, which also hands out the last, shorter chunk.
  """
  length = sequence_length["targets"]
  if length <= 2:
    raise ConfigError(f"sequence length {length} is invalid: use > 2 (<s>, tokens, </s>)")
  if dataset.cardinality() != tf.data.INFINITE_CARDINALITY:
    return chunk_stream(dataset, sequence_length)
  c = length - 2
  return dataset.scan((tf.zeros([c], tf.int32), tf.constant(0)), _cutter(c)).unbatch()


@functools.lru_cache(maxsize=None)
def _cutter(c: int):
  """`chunk_token_runs`' step, traced once for every language of a mixture (a thousand
  languages would otherwise trace it a thousand times while the pipeline is built)."""
  state_spec = (tf.TensorSpec([c], tf.int32), tf.TensorSpec([], tf.int32))

  @tf.function(input_signature=[state_spec, {"targets": tf.TensorSpec([None], tf.int32)}],
               autograph=False)
  def cut(state, ex):  # (carry [c], its length) + a run [n] -> new state, chunks [m, c]
    carry, n = state
    tokens = tf.concat([carry[:n], ex["targets"]], 0)
    full = tf.size(tokens) // c * c
    rest = tokens[full:]
    state = (tf.reshape(tf.pad(rest, [[0, c - tf.size(rest)]]), [c]), tf.size(rest))
    return state, {"targets": tf.reshape(tokens[:full], [-1, c])}

  return cut


# A monolingual task's preprocessors: tokenizing is cacheable, chunking depends on the length.
TEXT_PREPROCESSORS = (tokenize_lines, seqio.CacheDatasetPlaceholder(), chunk_stream)
# The same task read from its tokenized cache (`polyglot.data.tokenized`): runs of tokens.
CACHED_TEXT_PREPROCESSORS = (chunk_token_runs,)


class MlmFeatureConverter(seqio.FeatureConverter):
  """Task `targets` chunks -> framed, packed rows: `targets, segment_ids, positions`
  (the pipeline masks them: `polyglot.data.masking`).

  Each chunk becomes a sequence `<s> chunk </s>`, so `task_feature_lengths`
  is the row length and tasks cut chunks of at most that minus 2.

  seqio's packer (`utils.trim_and_pack_dataset`) treats token 0 as padding,
  but 0 is `<s>` in XLM-R ids; ids are shifted up by one around the packer
  and back after it, where padding becomes `<pad>`.
  """

  TASK_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  MODEL_FEATURES = {"targets": seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)}
  PACKING_FEATURE_DTYPES = {"segment_ids": tf.int32, "positions": tf.int32}

  def __init__(self, vocabulary: vocab_lib.Vocabulary):
    super().__init__(pack=True)
    self._vocab = vocabulary

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    vocab = self._vocab

    def frame(ex):  # [<= l - 2] -> [<= l], shifted for the packer
      return {"targets": tf.concat([[vocab.bos_id], ex["targets"], [vocab.eos_id]], 0) + 1}

    length = task_feature_lengths["targets"]

    def whole_row(ex):  # [l - 2] -> what the packer makes of a sequence that fills a row
      return {"targets": frame(ex)["targets"], "targets_segment_ids": tf.ones([length], tf.int32),
              "targets_positions": tf.range(length, dtype=tf.int32)}

    if ds.element_spec["targets"].shape == [length - 2]:  # every chunk full (cached streams)
      ds = ds.map(whole_row, num_parallel_calls=tf.data.AUTOTUNE)
    else:
      ds = ds.map(frame, num_parallel_calls=tf.data.AUTOTUNE)
      ds = self._pack_or_pad(ds, task_feature_lengths)

    def convert(ex):
      segment_ids = ex["targets_segment_ids"]
      return {"targets": tf.where(segment_ids > 0, ex["targets"] - 1, vocab.pad_id),
              "segment_ids": segment_ids, "positions": ex["targets_positions"]}

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> Mapping[str, int]:
    length = task_feature_lengths["targets"]  # framed chunks: `<s>` + l - 2 tokens + `</s>`
    return {k: length for k in ("targets", "segment_ids", "positions")}


def _swap_pair(ex: Mapping[str, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(first, second) side of a pair: `source, target` or, with probability 1/2 drawn from
  the stateless `seed` [2], `target, source`, so both directions train."""
  swap = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(swap, lambda: (ex["target"], ex["source"]),
                 lambda: (ex["source"], ex["target"]))


def _fit_pair(x: tf.Tensor, y: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Cuts the sides so that |x| + |y| <= budget, the longer side first, neither below half."""
  nx, ny = tf.size(x), tf.size(y)
  keep_x = tf.minimum(nx, tf.maximum(budget - ny, budget // 2))
  return x[:keep_x], y[:tf.minimum(ny, budget - keep_x)]


def tlm_rows(ds: tf.data.Dataset, vocab: vocab_lib.Vocabulary, seed: int,
             length: int) -> tf.data.Dataset:
  """Pairs {"source", "target"} -> packed TLM rows: `targets, segment_ids, positions`.

  Each pair becomes `<s> x </s></s> y </s>` (at most `length` tokens, sides cut
  by `_fit_pair`), positions restarting at the second `</s>`, so `y` is
  numbered like `x` (XLM resets positions for the target sentence). Pairs are
  packed into rows as MLM sequences are, each pair its own segment; the
  pipeline masks both sides (`polyglot.data.masking`).
  """
  bos, eos, pad = vocab.bos_id, vocab.eos_id, vocab.pad_id

  def frame(index, ex):  # ids and positions, shifted by 1 for the packer (0 is its padding)
    x, y = _swap_pair(ex, tf.stack([tf.constant(seed, tf.int64), index]))
    x, y = _fit_pair(x, y, length - 4)
    first = tf.concat([[bos], x, [eos]], 0)
    second = tf.concat([[eos], y, [eos]], 0)
    positions = tf.concat([tf.range(tf.size(first)), tf.range(tf.size(second))], 0)
    return {"targets": tf.concat([first, second], 0) + 1, "positions": positions + 1}

  ds = ds.enumerate().map(frame, num_parallel_calls=tf.data.AUTOTUNE)
  ds = seqio.utils.trim_and_pack_dataset(ds, {"targets": length, "positions": length})

  def convert(ex):
    segment_ids = ex["targets_segment_ids"]
    return {"targets": tf.where(segment_ids > 0, ex["targets"] - 1, pad),
            "segment_ids": segment_ids,
            "positions": tf.where(segment_ids > 0, ex["positions"] - 1, 0)}

  return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def pair_rows(ds: tf.data.Dataset, vocab: vocab_lib.Vocabulary, seed: int,
              length: int) -> tf.data.Dataset:
  """Pairs {"source", "target"} -> {"query_ids", "key_ids"} int32 [length]: each side
  `<s> side </s>` (cut to `length`), padded with `<pad>`; the query side is drawn per pair."""

  def row(side):
    ids = tf.concat([[vocab.bos_id], side[:length - 2], [vocab.eos_id]], 0)
    return tf.pad(ids, [[0, length - tf.size(ids)]], constant_values=vocab.pad_id)

  def convert(index, ex):
    q, k = _swap_pair(ex, tf.stack([tf.constant(seed, tf.int64), index]))
    return {"query_ids": tf.ensure_shape(row(q), [length]),
            "key_ids": tf.ensure_shape(row(k), [length])}

  return ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)
