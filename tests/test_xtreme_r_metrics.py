"""XTREME-R metrics against XTREME's own code (copied below) and scikit-learn."""
import random
from typing import List, Mapping, Sequence, Tuple, Union

import numpy as np
import pytest

from polyglot.errors import DataError
from polyglot.eval import metrics as core_metrics
from polyglot.eval.xtreme_r import metrics
from polyglot.eval.xtreme_r.readers import Query

sklearn_metrics = pytest.importorskip("sklearn.metrics")

# ---- Reference code, copied verbatim from google-research/xtreme (commit 838c13b,
# Apache License 2.0, Copyright 2020 Google and DeepMind). ----

# third_party/utils_lareqa.py
def average_precision_at_k(targets, ranked_predictions, k=None):
  """Computes AP@k given targets and ranked predictions."""
  if k:
    ranked_predictions = ranked_predictions[:k]
  score = 0.0
  hits = 0.0
  for i, pred in enumerate(ranked_predictions):
    if pred in targets and pred not in ranked_predictions[:i]:
      hits += 1.0
      score += hits / (i + 1.0)
  divisor = min(len(targets), k) if k else len(targets)
  return score / divisor


# third_party/utils_lareqa.py mean_avg_prec_at_k: the ranking of one question.
def lareqa_ranking(scores):
  return np.squeeze(scores).argsort()[::-1]


# third_party/utils_mewslix.py
def mean_reciprocal_rank(golds: Sequence[str],
                         predictions: Sequence[str]) -> float:
  """Computes mean reciprocal rank.

  Args:
    golds: list of gold entity ids.
    predictions: list of prediction lists

  Returns:
    mean reciprocal rank
  """

  def _reciprocal_rank(labels):
    for rank, label in enumerate(labels, start=1):
      if label:
        return 1.0 / rank
    return 0.0

  assert len(golds) == len(predictions)

  reciprocal_ranks = []
  for gold, prediction_list in zip(golds, predictions):
    labels = [int(p == gold) for p in prediction_list]
    reciprocal_ranks.append(_reciprocal_rank(labels))
  if reciprocal_ranks:
    return sum(reciprocal_ranks) / len(reciprocal_ranks)
  return 0.0


TOP_K = 20


def evaluate(
    gold_data: Mapping[str, Sequence[str]],
    predictions: Mapping[str, Sequence[str]],
    k: int = TOP_K,
    return_count_diff: bool = False) -> Union[float, Tuple[float, int, int]]:
  """Evaluates one set of entity linking predictions.

  Args:
    gold_data: dictionary that maps each unique example_id to a *singleton list*
      containing its gold entity ID.
    predictions: dictionary that maps each unique example_id to a list of
      predicted entity IDs. Partial credit may be obtained even if some
      instances are missing from this dictionary.
    k: Number of top predictions to evaluate per evaluation instance.
    return_count_diff: Whether to also return the number of missing and
      unexpected example_ids in predictions.

  Returns:
    mean reciprocal rank in the interval [0, 1] by default, otherwise if
    return_count_diff is True, returns the tuple
     (mean reciprocal rank, num missing example_ids, num extra example_ids).
  """
  # The dataset has a single gold label per instance, but the file provides
  # it as a list.
  gold_single_labels = {
      ex_id: labels[0].strip() for ex_id, labels in gold_data.items()
  }

  # Convert to parallel lists, and truncate to top-k predictions.
  gold_ids: List[str] = []
  pred_ids: List[List[str]] = []
  for example_id, gold in gold_single_labels.items():
    top_k_preds = predictions.get(example_id, [])[:k]
    gold_ids.append(gold)
    pred_ids.append(top_k_preds)
  assert len(gold_ids) == len(pred_ids), (len(gold_ids), len(pred_ids))

  mrr = mean_reciprocal_rank(golds=gold_ids, predictions=pred_ids)
  if return_count_diff:
    unpredicted_count = len(set(gold_single_labels) - set(predictions))
    unexpected_count = len(set(predictions) - set(gold_single_labels))
    return mrr, unpredicted_count, unexpected_count
  else:
    return mrr


# evaluate.py
def accuracy(labels, predictions, language=None):
  correct = sum([int(p == l) for p, l in zip(predictions, labels)])
  accuracy_score = float(correct) / len(predictions)
  return {'accuracy': accuracy_score * 100}

# ---- end of the copied code ----


def test_average_precision_hand_cases():
  # Relevant at ranks 2 and 4: (1/2 + 2/4) / 2.
  assert core_metrics.average_precision_at_k({"a", "b"}, ["x", "a", "y", "b"]) == 0.5
  # A repeated candidate counts once: (1/1 + 2/3) / 2.
  assert core_metrics.average_precision_at_k({"a", "b"}, ["a", "a", "b"]) == pytest.approx(5 / 6)
  # 25 relevant, the top 20 all relevant: the divisor is min(25, 20).
  relevant = {f"c{i}" for i in range(25)}
  assert core_metrics.average_precision_at_k(relevant, sorted(relevant)) == 1.0
  assert core_metrics.average_precision_at_k({"a"}, ["x"] * 20 + ["a"]) == 0.0
  with pytest.raises(DataError, match="k=0: k must be at least 1"):
    core_metrics.average_precision_at_k({"a"}, ["a"], k=0)


def _random_case(rng: np.random.Generator):
  """Scores over n candidates with many ties, and a random relevant subset."""
  n = int(rng.integers(1, 60))
  scores = rng.integers(0, 4, size=(1, n)).astype(np.float32)  # [1, n], tied values
  relevant = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
  return scores, relevant


def test_lareqa_map_matches_xtreme_with_ties():
  rng = np.random.default_rng(0)
  for k in (1, 5, 20):
    ref, relevant_by_q, rankings = [], {}, {}
    for q in range(200):
      scores, relevant = _random_case(rng)
      ranked = lareqa_ranking(scores)  # XTREME's own order of tied candidates
      ref.append(average_precision_at_k(relevant, ranked, k))
      assert core_metrics.average_precision_at_k(set(relevant.tolist()), ranked.tolist(),
                                                 k) == ref[-1]
      relevant_by_q[f"q{q}"] = {f"c{i}" for i in relevant}
      rankings[f"q{q}"] = [f"c{i}" for i in ranked]
    assert core_metrics.mean_average_precision(relevant_by_q, rankings, k) == pytest.approx(
        100 * np.mean(ref), rel=1e-12)


def test_repeated_candidates_match_xtreme():
  rng = random.Random(0)
  for _ in range(300):
    ranked = [rng.randrange(8) for _ in range(rng.randrange(30))]  # repeats
    relevant = set(rng.sample(range(8), rng.randint(1, 8)))
    assert core_metrics.average_precision_at_k(relevant, ranked) == average_precision_at_k(
        relevant, ranked, 20)


def test_query_without_relevant_candidates_is_an_error():
  with pytest.raises(ZeroDivisionError):  # XTREME's LAReQA code
    average_precision_at_k(np.array([], dtype=int), [0, 1], 20)
  with pytest.raises(IndexError):  # XTREME's Mewsli-X code
    evaluate({"q1": []}, {"q1": ["a"]})
  with pytest.raises(DataError, match="query 'q2' has no relevant candidate"):
    core_metrics.mean_average_precision({"q1": {"a"}, "q2": set()}, {"q1": ["a"]})
  with pytest.raises(DataError, match="needs at least one relevant candidate"):
    core_metrics.average_precision_at_k(set(), ["a"])


def test_mewslix_map_matches_xtreme():
  rng = random.Random(1)
  entities = [f"Q{i}" for i in range(40)]
  for _ in range(50):
    gold = {f"ex{i}": [rng.choice(entities)] for i in range(rng.randint(1, 30))}
    # Some mentions unpredicted, some predictions for unknown mentions, lists of
    # up to 30 ids (cut at 20) with repeats.
    predictions = {ex: [rng.choice(entities) for _ in range(rng.randint(0, 30))]
                   for ex in list(gold)[1:] + ["unknown"]}
    ours = core_metrics.mean_average_precision({ex: set(ids) for ex, ids in gold.items()},
                                          predictions)
    assert ours == pytest.approx(100 * evaluate(gold, predictions), rel=1e-12)


def test_map_matches_sklearn_at_full_depth_and_differs_at_20():
  """scikit-learn's average precision is AP over the whole ranking: with distinct
  scores it equals AP@n; AP@20 instead ignores relevant candidates below rank 20
  and divides by min(|relevant|, 20), not |relevant|."""
  rng = np.random.default_rng(2)
  differs = 0
  for _ in range(100):
    n = int(rng.integers(2, 80))
    scores = rng.permutation(n).astype(float)  # distinct: sklearn merges tied scores
    y_true = np.zeros(n, int)
    y_true[rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)] = 1
    relevant, ranked = set(np.flatnonzero(y_true).tolist()), np.argsort(-scores).tolist()
    full = sklearn_metrics.average_precision_score(y_true, scores)
    assert core_metrics.average_precision_at_k(relevant, ranked, k=n) == pytest.approx(full)
    differs += core_metrics.average_precision_at_k(relevant, ranked) != pytest.approx(full)
  assert differs > 0


def test_map_by_language():
  queries = [Query("a", "de", "?", frozenset({"x"})), Query("b", "de", "?", frozenset({"y"})),
             Query("c", "ar", "?", frozenset({"x", "y"}))]
  rankings = {"a": ["x"], "b": ["x", "y"], "c": ["y", "z", "x"]}
  assert core_metrics.map_by_language(queries, rankings) == {
      "ar": pytest.approx(100 * (1 + 2 / 3) / 2), "de": pytest.approx(100 * (1 + 1 / 2) / 2)}


def test_xcopa_accuracy_is_xtremes():
  rng = random.Random(3)
  gold = [rng.randint(0, 1) for _ in range(500)]
  pred = [rng.randint(0, 1) for _ in range(500)]
  assert core_metrics.accuracy(gold, pred) == accuracy(gold, pred)["accuracy"]


def test_xtreme_r_average():
  scores = {task: float(i) for i, task in enumerate(metrics.XTREME_R_TASKS)}
  assert len(scores) == 10
  out = metrics.xtreme_r_average(scores)
  assert out["all_task"] == pytest.approx(4.5)  # the mean over tasks, not categories
  assert out["classification"] == 0.5 and out["retrieval"] == 8.0
  partial = metrics.xtreme_r_average({"xnli": 80.0, "xcopa": 70.0, "udpos": 75.0})
  assert partial == {"classification": 75.0}
  with pytest.raises(DataError, match=r"unknown XTREME-R task\(s\) \['pawsx'\]; known: xnli"):
    metrics.xtreme_r_average({"pawsx": 1.0})
