"""Held-out rows of every language, for per-language evaluation during pretraining.

A data shard's validation tokens (`tokenized.load_corpus(..., "validation", shard)`:
each language's block of held-out lines, one stream per language) become
`rows_per_language` rows of each language that has any: row i holds chunk
i mod m of its m chunks, tokens [k*c, (k+1)*c) of its stream (c = length - 2)
between `<s>` and `</s>`, the last chunk padded. No row wraps around into its
own text, so none holds a copy of what it predicts; a language with fewer
chunks than rows repeats them under other masks (short held-out text, common
in the tail, still gets predicted tokens). Rows are masked as training rows are
(`masking.mask_batch`), language j with the generator `masking.batch_rng(seed,
j)`: every evaluation, and every resumed run, scores the same tokens under the
same masks.

Rows carry `languages` (int32 [rows], the language's index in the corpus);
`batches` cuts them into batches, padded with rows that hold no token, so that
every data shard gives the same number of batches.

`mixture_batches` gives the mixture's held-out batches (`train.Evaluator`'s
mean loss and accuracy) from the same tokens: each row draws its language at
the mixture's rates, as training rows do (`streams.draw_languages`), among the
languages with held-out tokens in the shard, and takes that language's next
chunk, cycling through its chunks; rows and masks are made as above, batch b
masked with `masking.batch_rng(seed, b)`. No tf.data pipeline: for a thousand
languages the batches cost milliseconds, where building and rewinding one cost
seconds per hundred languages (docs/benchmarks.md).
"""
from __future__ import annotations

import numpy as np

from polyglot.data import ids, masking, streams

FIELDS = ("input_ids", "targets", "loss_weights", "segment_ids", "positions", "languages")


def chunk_rows(corpus: streams.Corpus, languages: np.ndarray, chunks: np.ndarray,
               length: int) -> tuple[np.ndarray, np.ndarray]:
  """Row i: chunk `chunks[i]` of language `languages[i]` (tokens [k*c, (k+1)*c) of its
  stream, c = length - 2) between `<s>` and `</s>`, then padding: (targets, segment_ids),
  int32 [rows, length] each."""
  c = length - 2
  targets = np.full((len(languages), length), ids.PAD_ID, np.int32)
  segment_ids = np.zeros((len(languages), length), np.int32)
  for i, (j, k) in enumerate(zip(languages, chunks)):
    start, size = int(corpus.offsets[j]), int(corpus.sizes[j])
    chunk = corpus.tokens[start + k * c:start + min((k + 1) * c, size)]
    targets[i, 0], targets[i, 1:len(chunk) + 1], targets[i, len(chunk) + 1] = (
        ids.BOS_ID, chunk, ids.EOS_ID)
    segment_ids[i, :len(chunk) + 2] = 1
  return targets, segment_ids


def _positions(rows: int, length: int) -> np.ndarray:
  return np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length))


def language_rows(corpus: streams.Corpus, *, length: int, rows_per_language: int, seed: int,
                  mlm: masking.MlmConfig, mask_id: int,
                  word_start: np.ndarray) -> dict[str, np.ndarray]:
  """`FIELDS`: int32 [rows, length] each, `languages` int32 [rows]; languages in corpus
  order, `rows_per_language` rows each (none for a language without tokens)."""
  parts = {k: [] for k in FIELDS}
  n = rows_per_language
  for j, size in enumerate(corpus.sizes):
    chunks = -(-int(size) // (length - 2))
    if not chunks:
      continue
    targets, segment_ids = chunk_rows(corpus, np.full(n, j), np.arange(n) % chunks, length)
    input_ids, loss_weights = masking.mask_batch(
        targets, masking.batch_rng(seed, j), mask_id=mask_id, word_start=word_start, cfg=mlm)
    for k, v in (("input_ids", input_ids), ("targets", targets), ("loss_weights", loss_weights),
                 ("segment_ids", segment_ids), ("positions", _positions(n, length)),
                 ("languages", np.full(n, j, np.int32))):
      parts[k].append(v)
  if not parts["targets"]:
    return {k: np.zeros((0,) if k == "languages" else (0, length), np.int32) for k in FIELDS}
  return {k: np.concatenate(v) for k, v in parts.items()}


def mixture_batches(corpus: streams.Corpus, rates: np.ndarray, *, length: int,
                    batch_size: int, count: int, seed: int, mlm: masking.MlmConfig,
                    mask_id: int, word_start: np.ndarray) -> list[dict[str, np.ndarray]]:
  """`count` batches of `batch_size` rows drawn at `rates` ([languages]) from the languages
  with tokens, `FIELDS` but `languages` (int32 [batch_size, length] each; positions 0 on
  padding, as the input pipeline's); none when no language with a rate has tokens."""
  c = length - 2
  chunks = -(-corpus.sizes // c)                      # [languages]
  present = np.flatnonzero((chunks > 0) & (np.asarray(rates) > 0))
  if not len(present):
    return []
  kept = np.asarray(rates, np.float64)[present]
  languages = present[streams.draw_languages(seed, 0, count, batch_size,
                                             np.cumsum(kept / kept.sum()))]
  taken = streams.chunk_numbers(languages, np.zeros(len(chunks), np.int64)) % chunks[languages]
  targets, segment_ids = chunk_rows(corpus, languages, taken, length)
  input_ids, loss_weights = masking.mask_batch(
      targets, [masking.batch_rng(seed, b) for b in range(count)], mask_id=mask_id,
      word_start=word_start, cfg=mlm)
  fields = {"input_ids": input_ids, "targets": targets, "loss_weights": loss_weights,
            "segment_ids": segment_ids}
  fields["positions"] = np.where(segment_ids > 0, _positions(len(languages), length), 0)
  return [{k: v[b * batch_size:(b + 1) * batch_size] for k, v in fields.items()}
          for b in range(count)]


def num_batches(rows: dict[str, np.ndarray], batch_size: int) -> int:
  return -(-len(rows["languages"]) // batch_size)


def batches(rows: dict[str, np.ndarray], batch_size: int, count: int
            ) -> list[dict[str, np.ndarray]]:
  """`count` batches of `batch_size` rows (>= `num_batches`): the rows in order, then rows
  without tokens (`<pad>`, loss weight 0, segment 0, language 0)."""
  n, length = rows["targets"].shape
  if count * batch_size < n:
    raise ValueError(f"{n} rows do not fit in {count} batches of {batch_size}")
  padded = {}
  for k, v in rows.items():
    fill = ids.PAD_ID if k in ("input_ids", "targets") else 0
    shape = (count * batch_size,) + v.shape[1:]
    padded[k] = np.full(shape, fill, np.int32)
    padded[k][:n] = v
  padded["positions"][n:] = np.arange(length, dtype=np.int32)
  return [{k: v[i * batch_size:(i + 1) * batch_size] for k, v in padded.items()}
          for i in range(count)]
