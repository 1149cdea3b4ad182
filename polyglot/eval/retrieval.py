"""Sentence retrieval with a frozen encoder: Tatoeba, BUCC 2018, and pools (LAReQA, Mewsli-X).

Shape legend: n=source sentences, m=target (English) sentences, d=embedding,
k=neighbours.

Embeddings come in as [n, d] arrays, one row per sentence; how they are made
is in `hparams.RetrievalHparams`. Both tasks use cosine similarity, as XTREME's
`third_party/run_retrieval.py` and `utils_retrieve.py` (adapted from LASER):
- Tatoeba: every English sentence retrieves its nearest source sentence
  (`similarity_search`: FAISS L2 search over L2-normalised vectors, which
  ranks exactly as cosine); accuracy against the line alignment.
- BUCC: `mine_bitext` with its defaults, i.e. ratio-margin scores
  cos(x, y) / mean(knn means of x and y) over k=4 neighbours in both
  directions, candidates from both directions ("max" retrieval) kept greedily
  one-to-one; the score threshold that maximises F1 on gold pairs
  (`bucc_optimize`), chosen on dev and applied to test.
- A pool (`rank_pool`): every query ranks the whole candidate pool by cosine
  similarity; mAP@20 scores the top 20 (`metrics.mean_average_precision`).
  XTREME-R fine-tunes a dual encoder for LAReQA (on SQuAD) and Mewsli-X (on
  Wikipedia mention-entity pairs); with a frozen encoder the scores measure
  the pretrained model alone, as Tatoeba's do.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from polyglot.errors import DataError
from polyglot.eval import metrics

BUCC_NEIGHBOURS = 4  # utils_retrieve.mine_bitext(neighborhood=4)
_ROWS_PER_CHUNK = 1024  # bounds the [chunk, m] similarity block in memory


def l2_normalize(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit length (zero rows stay zero). [n, d] -> [n, d] float32."""
  x = np.asarray(x, np.float32)
  norms = np.linalg.norm(x, axis=1, keepdims=True)  # [n, 1]
  return x / np.maximum(norms, np.finfo(np.float32).tiny)


def knn(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-k inner products per query, best first: sims [n, k] and indices [n, k]."""
  k = min(k, len(keys))
  sims, idx = [], []
  for start in range(0, len(queries), _ROWS_PER_CHUNK):
    block = queries[start:start + _ROWS_PER_CHUNK] @ keys.T  # [c, d] @ [d, m] -> [c, m]
    top = np.argpartition(-block, k - 1, axis=1)[:, :k]  # [c, k], unordered
    top_sims = np.take_along_axis(block, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    idx.append(np.take_along_axis(top, order, axis=1))
    sims.append(np.take_along_axis(top_sims, order, axis=1))
  return np.concatenate(sims), np.concatenate(idx)


def _check_embeddings(name: str, emb: np.ndarray, n: int) -> None:
  if emb.ndim != 2 or len(emb) != n or n == 0:
    raise DataError(f"{name} embeddings have shape {emb.shape}; expected [{n}, d] with one row "
                    "per sentence")


# ---- Tatoeba ----

def tatoeba_predictions(source_emb: np.ndarray, english_emb: np.ndarray) -> np.ndarray:
  """For each English sentence, the index of the most cosine-similar source sentence. [m]"""
  _, idx = knn(l2_normalize(english_emb), l2_normalize(source_emb), 1)  # [m, 1]
  return idx[:, 0]


def tatoeba_accuracy(source_emb: np.ndarray, english_emb: np.ndarray) -> float:
  """Percent of English sentences that retrieve their own translation."""
  _check_embeddings("English", np.asarray(english_emb), len(source_emb))
  pred = tatoeba_predictions(source_emb, english_emb)
  return metrics.accuracy(list(range(len(pred))), pred.tolist())


# ---- a pool ----

def rank_pool(query_emb: np.ndarray, candidate_emb: np.ndarray, candidate_ids: Sequence[str],
              k: int) -> list[list[str]]:
  """Each query's k most cosine-similar candidates, best first, as ids: [q, d], [c, d] -> q
  lists of k."""
  _check_embeddings("candidate", np.asarray(candidate_emb), len(candidate_ids))
  _, idx = knn(l2_normalize(query_emb), l2_normalize(candidate_emb), k)  # [q, k]
  return [[candidate_ids[i] for i in row] for row in idx.tolist()]


# ---- BUCC 2018 ----

def margin_mine(x: np.ndarray, y: np.ndarray, k: int = BUCC_NEIGHBOURS
                ) -> list[tuple[int, int, float]]:
  """(source row, target row, ratio-margin score) pairs, one-to-one, best first,
  score > 0 (`mine_bitext(mode="mine", retrieval="max", margin="ratio")`)."""
  x, y = l2_normalize(x), l2_normalize(y)
  fwd_sim, fwd_idx = knn(x, y, k)  # [n, k]
  bwd_sim, bwd_idx = knn(y, x, k)  # [m, k]
  fwd_mean, bwd_mean = fwd_sim.mean(axis=1), bwd_sim.mean(axis=1)  # [n], [m]
  fwd_scores = fwd_sim / ((fwd_mean[:, None] + bwd_mean[fwd_idx]) / 2)  # [n, k]
  bwd_scores = bwd_sim / ((bwd_mean[:, None] + fwd_mean[bwd_idx]) / 2)  # [m, k]
  fwd_best = fwd_idx[np.arange(len(x)), fwd_scores.argmax(axis=1)]  # [n]
  bwd_best = bwd_idx[np.arange(len(y)), bwd_scores.argmax(axis=1)]  # [m]
  src = np.concatenate([np.arange(len(x)), bwd_best])  # [n + m]
  trg = np.concatenate([fwd_best, np.arange(len(y))])
  scores = np.concatenate([fwd_scores.max(axis=1), bwd_scores.max(axis=1)])
  out, seen_src, seen_trg = [], set(), set()
  for i in np.argsort(-scores, kind="stable"):
    s, t = int(src[i]), int(trg[i])
    if s in seen_src or t in seen_trg:
      continue
    seen_src.add(s)
    seen_trg.add(t)
    if scores[i] > 0:
      out.append((s, t, float(scores[i])))
  return out


def _unique_rows(sentences: Sequence[str]) -> tuple[list[str], list[int]]:
  """Distinct sentences in order of first occurrence (`text_load_unify`) and the row of
  each one's LAST occurrence: `unique_embeddings` builds {unique index: row} over all
  rows, so a repeat's row overwrites the earlier one and the last embedding is mined."""
  last: dict[str, int] = {}
  for i, s in enumerate(sentences):
    last[s] = i  # a repeated key keeps its first position in the dict, takes the new row
  return list(last), list(last.values())


def _sentence_ids(ids: Sequence[str], sentences: Sequence[str]) -> dict[str, str]:
  """sentence -> id for sentences that occur once (`read_sent2id` drops repeats)."""
  counts: dict[str, int] = {}
  for s in sentences:
    counts[s] = counts.get(s, 0) + 1
  return {s: i for i, s in zip(ids, sentences) if counts[s] == 1}


def bucc_candidates(source_ids: Sequence[str], source: Sequence[str], source_emb: np.ndarray,
                    english_ids: Sequence[str], english: Sequence[str], english_emb: np.ndarray,
                    k: int = BUCC_NEIGHBOURS) -> dict[tuple[str, str], float]:
  """(source id, English id) -> margin score of the mined candidate pairs.

  Sentences are mined once per distinct text, with the embedding of its last
  occurrence (XTREME's `text_load_unify` + `unique_embeddings`); a text that
  occurs more than once still takes part in the mining (neighbour means,
  one-to-one competition) but has no single id, so its own pairs are dropped,
  as XTREME's `read_candidate2score` does.
  """
  source_emb, english_emb = np.asarray(source_emb), np.asarray(english_emb)
  _check_embeddings("source", source_emb, len(source))
  _check_embeddings("English", english_emb, len(english))
  src_text, src_rows = _unique_rows(source)
  en_text, en_rows = _unique_rows(english)
  src_id, en_id = _sentence_ids(source_ids, source), _sentence_ids(english_ids, english)
  out: dict[tuple[str, str], float] = {}
  for s, t, score in margin_mine(source_emb[src_rows], english_emb[en_rows], k):
    if src_text[s] in src_id and en_text[t] in en_id:
      key = (src_id[src_text[s]], en_id[en_text[t]])
      out[key] = max(score, out.get(key, score))
  return out


def optimize_threshold(candidates: Mapping[tuple[str, str], float],
                       gold: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> float:
  """The score threshold that maximises F1 against `gold` (`bucc_optimize`):
  midway between the last kept and the next candidate score. Where the best
  cut keeps every candidate (XTREME indexes past its list there) the last
  score itself is the threshold."""
  items = sorted(candidates.items(), key=lambda kv: -kv[1])
  threshold, best_f1, correct = 0.0, 0.0, 0
  for i, (pair, score) in enumerate(items):
    correct += pair in gold
    if not correct:
      continue
    precision, recall = correct / (i + 1), correct / len(gold)
    f1 = 2 * precision * recall / (precision + recall)
    if f1 > best_f1:
      best_f1 = f1
      threshold = (score + items[i + 1][1]) / 2 if i + 1 < len(items) else score
  return threshold


def extract_pairs(candidates: Mapping[tuple[str, str], float], threshold: float
                  ) -> set[tuple[str, str]]:
  """Candidates scoring at least `threshold` (`bucc_extract`)."""
  return {pair for pair, score in candidates.items() if score >= threshold}


def bucc_scores(candidates: Mapping[tuple[str, str], float],
                gold: set[tuple[str, str]] | frozenset[tuple[str, str]],
                threshold: float | None = None) -> dict[str, float]:
  """Precision, recall, F1 (percent) and the threshold used; `threshold=None`
  chooses it on `gold` (do that on dev, then pass it for test)."""
  if not gold:
    raise DataError("BUCC scoring needs at least one gold pair")
  if threshold is None:
    threshold = optimize_threshold(candidates, gold)
  return {**metrics.bucc_f1(gold, extract_pairs(candidates, threshold)), "threshold": threshold}
