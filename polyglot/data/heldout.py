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
"""
from __future__ import annotations

import numpy as np

from polyglot.data import ids, masking, streams

FIELDS = ("input_ids", "targets", "loss_weights", "segment_ids", "positions", "languages")


def language_rows(corpus: streams.Corpus, *, length: int, rows_per_language: int, seed: int,
                  mlm: masking.MlmConfig, mask_id: int,
                  word_start: np.ndarray) -> dict[str, np.ndarray]:
  """`FIELDS`: int32 [rows, length] each, `languages` int32 [rows]; languages in corpus
  order, `rows_per_language` rows each (none for a language without tokens)."""
  c = length - 2
  parts = {k: [] for k in FIELDS}
  for j, (start, size) in enumerate(zip(corpus.offsets[:-1], corpus.sizes)):
    chunks = -(-int(size) // c)
    if not chunks:
      continue
    n = rows_per_language
    targets = np.full((n, length), ids.PAD_ID, np.int32)
    segment_ids = np.zeros((n, length), np.int32)
    for i in range(n):
      k = i % chunks
      chunk = corpus.tokens[start + k * c:start + min((k + 1) * c, size)]
      targets[i, 0], targets[i, 1:len(chunk) + 1], targets[i, len(chunk) + 1] = (
          ids.BOS_ID, chunk, ids.EOS_ID)
      segment_ids[i, :len(chunk) + 2] = 1
    input_ids, loss_weights = masking.mask_batch(
        targets, masking.batch_rng(seed, j), mask_id=mask_id, word_start=word_start, cfg=mlm)
    for k, v in (("input_ids", input_ids), ("targets", targets), ("loss_weights", loss_weights),
                 ("segment_ids", segment_ids),
                 ("positions", np.broadcast_to(np.arange(length, dtype=np.int32), (n, length))),
                 ("languages", np.full(n, j, np.int32))):
      parts[k].append(v)
  if not parts["targets"]:
    return {k: np.zeros((0,) if k == "languages" else (0, length), np.int32) for k in FIELDS}
  return {k: np.concatenate(v) for k, v in parts.items()}


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
