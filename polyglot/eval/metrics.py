"""The scores the benchmarks report, computed exactly as their official scorers do.

| task | metric (percent) | reference |
|---|---|---|
| XNLI, PAWS-X, Tatoeba | accuracy | XTREME `evaluate.py` `accuracy` |
| UD-POS, PAN-X | micro F1 over chunks, seqeval 1.x default mode | `evaluate.py` `f1` (seqeval) |
| XQuAD, TyDi QA GoldP | SQuAD v1.1 EM and F1 | SQuAD `evaluate-v1.1.py` |
| MLQA | EM and F1 with MLQA's language-aware normalisation | MLQA `mlqa_evaluation_v1.py` |
| BUCC 2018 | F1 of predicted vs gold pairs | `evaluate.py` `bucc_f1` |
| XGLUE WPR | mean nDCG over queries | XGLUE `xglue_evaluate.py` `simple_ndcg` |
| LAReQA, Mewsli-X | mAP@20 per language | XTREME `utils_lareqa.py`, `utils_mewslix.py` |

XTREME scores UD-POS with seqeval's entity F1 too: a UPOS tag such as NOUN is
read as prefix "N" + type "OUN", so runs of one tag merge into one chunk. We
reproduce seqeval's chunking (`get_entities`) rather than depend on seqeval:
it is not a runtime dependency of this package, the algorithm is 40 lines, and
tests compare the two on fixtures.

AP@k of one query (`average_precision_at_k`): over the first k ranks, the
precision at each rank holding a relevant candidate (a candidate repeated in
the ranking counts once), summed and divided by min(|relevant|, k). It is
read off a ranking: how ties in similarity are ordered is the ranker's choice
(XTREME's LAReQA code takes `argsort()[::-1]` of the scores, Mewsli-X FAISS's
order; neither is specified for ties). A query without a ranking scores 0
(Mewsli-X); a query without a relevant candidate has no AP (XTREME's LAReQA
code divides by zero, its Mewsli-X code fails on the empty gold list) and is
an error.

Tag-set mismatch rule: gold tags whose entity type is not in the training
label set (MasakhaNER's DATE against English CoNLL training data, see the data
README) are read as `O` before scoring (`map_unseen_entity_types`).
"""
from __future__ import annotations

import collections
import itertools
import math
import re
import string
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence

from polyglot.errors import DataError
from polyglot.eval.readers import QAExample, Query

TOP_K = 20  # utils_mewslix.TOP_K; evaluate_retrieval.py mean_avg_prec_at_k(..., k=20)


def accuracy(gold: Sequence, pred: Sequence) -> float:
  """Percent of positions where `pred` equals `gold`."""
  if len(gold) != len(pred) or not gold:
    raise DataError(f"accuracy needs equally many gold and predicted labels (> 0), got "
                    f"{len(gold)} and {len(pred)}")
  return 100.0 * sum(g == p for g, p in zip(gold, pred)) / len(gold)


# ---- chunk F1 (seqeval 1.2 `metrics/sequence_labeling.py`, default mode) ----

def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  return (prev_tag in ("E", "S")
          or (prev_tag == "B" and tag in ("B", "S", "O"))
          or (prev_tag == "I" and tag in ("B", "S", "O"))
          or (prev_tag not in ("O", ".") and prev_type != type_))


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
  return (tag in ("B", "S")
          or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
          or (tag not in ("O", ".") and prev_type != type_))


def get_entities(seq: Sequence[str]) -> list[tuple[str, int, int]]:
  """(type, first, last) chunks of a flat tag sequence, as seqeval's `get_entities`."""
  chunks = []
  prev_tag, prev_type, begin = "O", "", 0
  for i, chunk in enumerate([*seq, "O"]):
    tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
    if _end_of_chunk(prev_tag, tag, prev_type, type_):
      chunks.append((prev_type, begin, i - 1))
    if _start_of_chunk(prev_tag, tag, prev_type, type_):
      begin = i
    prev_tag, prev_type = tag, type_
  return chunks


def _flatten(sentences: Sequence[Sequence[str]]) -> list[str]:
  # seqeval joins sentences with an "O" between them.
  return [tag for sentence in sentences for tag in (*sentence, "O")]


def span_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
  """Micro precision, recall and F1 (percent) over chunks, as seqeval's
  `precision_score`/`recall_score`/`f1_score` on lists of sentences."""
  if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
    raise DataError("span_f1 needs one predicted tag per gold tag in every sentence")
  true, found = collections.defaultdict(set), collections.defaultdict(set)
  for type_, start, end in get_entities(_flatten(gold)):
    true[type_].add((start, end))
  for type_, start, end in get_entities(_flatten(pred)):
    found[type_].add((start, end))
  tp = sum(len(true[t] & found[t]) for t in set(true) | set(found))
  n_true = sum(len(v) for v in true.values())
  n_pred = sum(len(v) for v in found.values())
  precision = tp / n_pred if n_pred else 0.0
  recall = tp / n_true if n_true else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


def map_unseen_entity_types(sentences: Iterable[Sequence[str]], labels: Sequence[str]
                            ) -> list[list[str]]:
  """IOB tags whose entity type no label in `labels` has become `O`
  (B-DATE/I-DATE of MasakhaNER when training on English CoNLL-2003)."""
  known = {label.split("-", 1)[1] for label in labels if "-" in label}
  return [[t if t == "O" or t.split("-", 1)[-1] in known else "O" for t in sentence]
          for sentence in sentences]


# ---- SQuAD v1.1 (rajpurkar/SQuAD-explorer evaluate-v1.1.py) ----

_ASCII_PUNCT = frozenset(string.punctuation)


def squad_normalize(s: str) -> str:
  """Lower case, drop ASCII punctuation, articles a/an/the, extra whitespace."""
  s = "".join(ch for ch in s.lower() if ch not in _ASCII_PUNCT)
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
  common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, truth: str) -> float:
  return _token_f1(squad_normalize(prediction).split(), squad_normalize(truth).split())


def squad_exact_match(prediction: str, truth: str) -> float:
  return float(squad_normalize(prediction) == squad_normalize(truth))


# ---- MLQA (facebookresearch/MLQA mlqa_evaluation_v1.py) ----

_WHITESPACE_LANGS = ("en", "es", "hi", "vi", "de", "ar")
_MIXED_SEGMENTATION_LANGS = ("zh",)
_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": "\\sال^|ال",
}
MLQA_LANGUAGES = _WHITESPACE_LANGS + _MIXED_SEGMENTATION_LANGS


def _is_mlqa_punct(ch: str) -> bool:
  # MLQA's PUNCT: every Unicode "P*" character plus string.punctuation.
  return unicodedata.category(ch).startswith("P") or ch in _ASCII_PUNCT


def _mixed_segmentation(text: str) -> list[str]:
  """CJK characters and punctuation are tokens; other runs split on whitespace."""
  out, run = [], ""
  for ch in text:
    if re.search(r"[\u4e00-\u9fa5]", ch) or _is_mlqa_punct(ch):
      out.extend(run.split())
      run = ""
      out.append(ch)
    else:
      run += ch
  out.extend(run.split())
  return out


def mlqa_normalize(s: str, lang: str) -> str:
  if lang not in MLQA_LANGUAGES:
    raise DataError(f"MLQA normalisation is defined for {MLQA_LANGUAGES}, not {lang!r}")
  s = "".join(ch for ch in s.lower() if not _is_mlqa_punct(ch))
  if lang in _ARTICLES:
    s = re.sub(_ARTICLES[lang], " ", s)
  tokens = _mixed_segmentation(s) if lang in _MIXED_SEGMENTATION_LANGS else s.split()
  return " ".join(t for t in tokens if t.strip())


def mlqa_f1(prediction: str, truth: str, lang: str) -> float:
  return _token_f1(mlqa_normalize(prediction, lang).split(), mlqa_normalize(truth, lang).split())


def mlqa_exact_match(prediction: str, truth: str, lang: str) -> float:
  return float(mlqa_normalize(prediction, lang) == mlqa_normalize(truth, lang))


def qa_scores(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
              lang: str | None = None) -> dict[str, float]:
  """Exact match and F1 (percent), max over gold answers, averaged over every
  gold question (an unanswered one scores 0). `lang=None` is SQuAD v1.1;
  a language code uses MLQA's normalisation."""
  if not gold:
    raise DataError("qa_scores needs at least one gold question")
  em = f1 = 0.0
  for qid, truths in gold.items():
    if qid not in predictions:
      continue
    pred = predictions[qid]
    if lang is None:
      em += max(squad_exact_match(pred, t) for t in truths)
      f1 += max(squad_f1(pred, t) for t in truths)
    else:
      em += max(mlqa_exact_match(pred, t, lang) for t in truths)
      f1 += max(mlqa_f1(pred, t, lang) for t in truths)
  return {"exact_match": 100 * em / len(gold), "f1": 100 * f1 / len(gold)}


def gold_answers(examples: Iterable[QAExample]) -> dict[str, tuple[str, ...]]:
  """question id -> answer texts, the `gold` of `qa_scores`; ids must be unique."""
  out = {}
  for ex in examples:
    if ex.guid in out:
      raise DataError(f"question id {ex.guid!r} appears twice; QA evaluation needs unique ids")
    out[ex.guid] = tuple(a.text for a in ex.answers)
  return out


# ---- BUCC 2018 ----

def bucc_f1(gold: Iterable[tuple[str, str]], predicted: Iterable[tuple[str, str]]
            ) -> dict[str, float]:
  """Precision, recall, F1 (percent) of predicted (source id, English id) pairs."""
  gold, predicted = set(gold), set(predicted)
  correct = len(gold & predicted)
  if not correct:
    return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
  precision, recall = correct / len(predicted), correct / len(gold)
  return {"precision": 100 * precision, "recall": 100 * recall,
          "f1": 100 * 2 * precision * recall / (precision + recall)}


# ---- ranking (XGLUE WPR) ----

def ndcg(gold: Sequence[float], scores: Sequence[float]) -> float:
  """nDCG (a fraction) of one query's documents ranked by `scores`, as
  scikit-learn's `ndcg_score([gold], [scores])` with its defaults.

  Gain is the relevance label itself (not 2**label - 1), the discount of rank
  r (from 1) is 1 / log2(r + 1), every document counts (no cutoff), documents
  with equal scores get their group's mean gain (the mean over the group's
  orderings; McSherry & Najork, ECIR 2008), and a query whose labels are all 0
  scores 0.
  """
  discounts = [1 / math.log2(rank + 2) for rank in range(len(gold))]
  ideal = sum(g * d for g, d in zip(sorted(gold, reverse=True), discounts))
  if ideal == 0:
    return 0.0
  order = sorted(range(len(gold)), key=lambda i: -scores[i])
  dcg, rank = 0.0, 0
  for _, tied in itertools.groupby(order, key=lambda i: scores[i]):
    tied = list(tied)
    mean_gain = sum(gold[i] for i in tied) / len(tied)
    dcg += mean_gain * sum(discounts[rank:rank + len(tied)])
    rank += len(tied)
  return dcg / ideal


def number(value, what: str, i: int) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError) as e:
    raise DataError(f"{what} {i} is {value!r}, not a number") from e
  if not math.isfinite(x):
    raise DataError(f"{what} {i} is {value!r}; nDCG needs finite numbers")
  return x


def mean_ndcg(query_ids: Sequence[int], gold: Sequence, scores: Sequence) -> float:
  """Mean nDCG (percent) over the queries with two or more documents, as XGLUE's
  scorer (`simple_ndcg` of `evaluation/xglue_evaluate.py`); a query whose labels
  are all 0 counts with 0.

  `query_ids` are `RankExample.query_id`, `gold` the relevance labels ("0"-"4"),
  `scores` the predictions (labels or any real scores).
  """
  if not len(query_ids) == len(gold) == len(scores):
    raise DataError(f"nDCG needs one query id, gold label and score per document, got "
                    f"{len(query_ids)}, {len(gold)} and {len(scores)}")
  queries: dict[int, tuple[list[float], list[float]]] = {}
  for i, (qid, g, s) in enumerate(zip(query_ids, gold, scores)):
    g = number(g, "gold label", i)
    if g < 0:
      raise DataError(f"gold label {i} is {g}; relevance labels are 0-4")
    q = queries.setdefault(qid, ([], []))
    q[0].append(g)
    q[1].append(number(s, "score", i))
  values = [ndcg(g, s) for g, s in queries.values() if len(g) >= 2]
  if not values:
    raise DataError("nDCG needs a query with two or more documents")
  return 100 * sum(values) / len(values)


def average_precision_at_k(relevant: Collection[str], ranked: Sequence[str],
                           k: int = TOP_K) -> float:
  """AP@k in [0, 1] of one ranking (utils_lareqa.py `average_precision_at_k`)."""
  if not relevant:
    raise DataError("average precision needs at least one relevant candidate")
  if k < 1:
    raise DataError(f"average precision at k={k}: k must be at least 1")
  seen, hits, score = set(), 0, 0.0
  for rank, cid in enumerate(ranked[:k], 1):
    if cid in relevant and cid not in seen:
      hits += 1
      score += hits / rank
    seen.add(cid)
  return score / min(len(relevant), k)


def mean_average_precision(relevant: Mapping[str, Collection[str]],
                           rankings: Mapping[str, Sequence[str]], k: int = TOP_K) -> float:
  """mAP@k (percent) over every query of `relevant` (query id -> relevant candidate ids).

  `rankings`: query id -> candidate ids, best first; a query missing from it
  scores 0, rankings of other queries are ignored (utils_mewslix.py `evaluate`).
  """
  if not relevant:
    raise DataError("mean average precision needs at least one query")
  empty = [qid for qid, rel in relevant.items() if not rel]
  if empty:
    raise DataError(f"query {empty[0]!r} has no relevant candidate; its average precision is "
                    "undefined: drop it or fix its gold candidates")
  total = sum(average_precision_at_k(rel, rankings.get(qid, ()), k)
              for qid, rel in relevant.items())
  return 100 * total / len(relevant)


def map_by_language(queries: Iterable[Query], rankings: Mapping[str, Sequence[str]],
                    k: int = TOP_K) -> dict[str, float]:
  """mAP@k (percent) of the queries of each language, languages sorted.

  Mewsli-X's task score is their mean (utils_mewslix.py `evaluate_all`);
  LAReQA's is `mean_average_precision` over all questions, which equals their
  mean when every language has as many questions (1190 each in XQuAD-R).
  """
  by_lang = collections.defaultdict(dict)
  for q in queries:
    by_lang[q.lang][q.id] = q.relevant
  return {lang: mean_average_precision(by_lang[lang], rankings, k) for lang in sorted(by_lang)}
