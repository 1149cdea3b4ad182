"""XTREME-R's scores for its new tasks, computed as its code does (percent).

| task | metric | reference (google-research/xtreme) |
|---|---|---|
| XCOPA | accuracy | `evaluate.py` `accuracy` (`polyglot.eval.metrics.accuracy`) |
| LAReQA | mAP@20, all questions against one pool | `utils_lareqa.py` `mean_avg_prec_at_k` |
| Mewsli-X | mAP@20 (MRR@20) per language, then mean | `utils_mewslix.py` `evaluate` |

LAReQA pools the questions and candidates of every language (k=20 in
`third_party/evaluate_retrieval.py`); Mewsli-X has one gold entity per
mention, so its AP is the reciprocal rank (`evaluate.py` `mewslix_map20`).

AP@k of one query (`average_precision_at_k`): over the first k ranks, the
precision at each rank holding a relevant candidate (a candidate repeated in
the ranking counts once), summed and divided by min(|relevant|, k). It is
read off a ranking: how ties in similarity are ordered is the ranker's choice
(XTREME's LAReQA code takes `argsort()[::-1]` of the scores, Mewsli-X FAISS's
order; neither is specified for ties). A query without a ranking scores 0
(Mewsli-X); a query without a relevant candidate has no AP (XTREME's LAReQA
code divides by zero, its Mewsli-X code fails on the empty gold list) and is
an error.

The XTREME-R score (`xtreme_r_average`): each task's score is the mean over
its languages of its metric ((EM + F1) / 2 for the QA tasks), the overall
score the mean over the ten tasks, as `evaluate.py` `evaluate` (`all_task`),
and each category's score the mean over its tasks.
"""
from __future__ import annotations

import collections
from collections.abc import Collection, Iterable, Mapping, Sequence

from polyglot.errors import DataError
from polyglot.eval.xtreme_r.readers import Query

TOP_K = 20  # utils_mewslix.TOP_K; evaluate_retrieval.py mean_avg_prec_at_k(..., k=20)

# The paper's task categories (Ruder et al., 2021, the XTREME-R task table). `evaluate.py`'s
# XTREME_R_GROUP2TASK leaves LAReQA out of "retrieval" (it has no per-language
# label files there) and lists XCOPA again as "multi_choice"; neither changes
# the overall score, a mean over tasks.
XTREME_R_CATEGORIES = {
    "classification": ("xnli", "xcopa"),
    "structured_prediction": ("udpos", "panx"),
    "qa": ("xquad", "mlqa", "tydiqa"),
    "retrieval": ("tatoeba", "mewslix", "lareqa"),
}
XTREME_R_TASKS = tuple(t for tasks in XTREME_R_CATEGORIES.values() for t in tasks)


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


def xtreme_r_average(task_scores: Mapping[str, float]) -> dict[str, float]:
  """The XTREME-R scores of `task_scores` (task -> its score over its languages).

  Returns each category whose tasks are all scored, and `all_task`, the mean
  over the ten tasks, once all are scored (`evaluate.py` shows the same).
  """
  unknown = sorted(set(task_scores) - set(XTREME_R_TASKS))
  if unknown:
    raise DataError(f"unknown XTREME-R task(s) {unknown}; known: {', '.join(XTREME_R_TASKS)}")
  out = {category: sum(task_scores[t] for t in tasks) / len(tasks)
         for category, tasks in XTREME_R_CATEGORIES.items()
         if all(t in task_scores for t in tasks)}
  if len(task_scores) == len(XTREME_R_TASKS):
    out["all_task"] = sum(task_scores[t] for t in XTREME_R_TASKS) / len(XTREME_R_TASKS)
  return out
