"""XTREME-R's scores for its new tasks, computed as its code does (percent).

| task | metric | reference (google-research/xtreme) |
|---|---|---|
| XCOPA | accuracy | `evaluate.py` `accuracy` (`polyglot.eval.metrics.accuracy`) |
| LAReQA | mAP@20, all questions against one pool | `utils_lareqa.py` `mean_avg_prec_at_k` |
| Mewsli-X | mAP@20 (MRR@20) per language, then mean | `utils_mewslix.py` `evaluate` |

LAReQA pools the questions and candidates of every language (k=20 in
`third_party/evaluate_retrieval.py`); Mewsli-X has one gold entity per
mention, so its AP is the reciprocal rank (`evaluate.py` `mewslix_map20`).

AP@k and mAP@k are the evaluation core's (`polyglot.eval.metrics`), with how
they treat ties, missing rankings and queries without a relevant candidate.

The XTREME-R score (`xtreme_r_average`): each task's score is the mean over
its languages of its metric ((EM + F1) / 2 for the QA tasks), the overall
score the mean over the ten tasks, as `evaluate.py` `evaluate` (`all_task`),
and each category's score the mean over its tasks.
"""
from __future__ import annotations

from collections.abc import Mapping

from polyglot.errors import DataError


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
