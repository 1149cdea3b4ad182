"""XTREME metrics against hand-computed cases and, for chunk F1, the seqeval package."""
import random
import warnings

import pytest

from polyglot.errors import DataError
from polyglot.eval import metrics
from polyglot.eval.readers import Answer, QAExample

seqeval_metrics = pytest.importorskip("seqeval.metrics")


def test_accuracy_hand_case():
  assert metrics.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 75.0
  with pytest.raises(DataError, match="equally many"):
    metrics.accuracy(["a"], ["a", "b"])


def test_get_entities_iob2():
  tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "I-PER"]
  # A stray I- after another type starts a new chunk (conlleval semantics).
  assert metrics.get_entities(tags) == [
      ("PER", 0, 1), ("LOC", 3, 5), ("ORG", 6, 6), ("ORG", 7, 7), ("PER", 8, 8)]


def test_span_f1_hand_case():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
  pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
  # gold chunks: PER(0,1) LOC(3,3) ORG(5,5); predicted: PER(0,1) ORG(5,5) LOC(6,6).
  out = metrics.span_f1(gold, pred)
  assert out["precision"] == pytest.approx(200 / 3)
  assert out["recall"] == pytest.approx(200 / 3)
  assert out["f1"] == pytest.approx(200 / 3)


def test_pos_tags_are_chunked_as_seqeval_does():
  # XTREME scores UD-POS with seqeval: a run of NOUNs is one "OUN" chunk.
  gold = [["DET", "NOUN", "NOUN", "VERB"]]
  pred = [["DET", "NOUN", "PROPN", "VERB"]]
  assert metrics.get_entities(gold[0]) == [("ET", 0, 0), ("OUN", 1, 2), ("ERB", 3, 3)]
  # gold: DET NOUN(1-2) VERB; pred: DET NOUN(1) PROPN(2) VERB -> 2 of 4 predicted, 2 of 3 gold.
  out = metrics.span_f1(gold, pred)
  assert out["precision"] == pytest.approx(50.0)
  assert out["recall"] == pytest.approx(200 / 3)


def _random_sentences(rng, tags, n):
  return [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(n)]


@pytest.mark.parametrize("tags", [
    ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"],
    ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
     "PUNCT", "SCONJ", "SYM", "VERB", "X"],
])
def test_span_f1_matches_seqeval(tags):
  rng = random.Random(0)
  for _ in range(20):
    gold = _random_sentences(rng, tags, 15)
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in gold]
    ours = metrics.span_f1(gold, pred)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # seqeval: "NOUN seems not to be NE tag"
      theirs = (seqeval_metrics.precision_score(gold, pred),
                seqeval_metrics.recall_score(gold, pred), seqeval_metrics.f1_score(gold, pred))
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx(
        tuple(100 * x for x in theirs))


def test_unseen_entity_types_become_o():
  sentences = [["B-PER", "I-PER", "B-DATE", "I-DATE", "O", "B-LOC"]]
  labels = ("B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O")
  assert metrics.map_unseen_entity_types(sentences, labels) == [
      ["B-PER", "I-PER", "O", "O", "O", "B-LOC"]]


def test_squad_hand_cases():
  assert metrics.squad_normalize("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
  assert metrics.squad_exact_match("the Eiffel Tower", "Eiffel Tower.") == 1.0
  # pred tokens [eiffel, tower, paris], gold [eiffel, tower]: P=2/3, R=1, F1=0.8.
  assert metrics.squad_f1("Eiffel Tower Paris", "the Eiffel Tower") == pytest.approx(0.8)
  assert metrics.squad_f1("", "answer") == 0.0
  gold = {"q1": ("Paris", "the city of Paris"), "q2": ("1889",), "q3": ("blue",)}
  pred = {"q1": "city of Paris", "q2": "in 1889"}  # q3 unanswered scores 0
  out = metrics.qa_scores(gold, pred)
  # q1: EM 1 (2nd answer), F1 1; q2: EM 0, F1 2*(1/2*1)/(1.5) = 2/3.
  assert out["exact_match"] == pytest.approx(100 / 3)
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_mlqa_normalisation_hand_cases():
  assert metrics.mlqa_normalize("Der Hund «bellt»!", "de") == "hund bellt"
  assert metrics.mlqa_normalize("Los perros", "es") == "perros"
  # zh: CJK characters are tokens, other runs split on whitespace.
  assert metrics.mlqa_normalize("北京 Olympics2008年。", "zh") == "北 京 olympics2008 年"
  assert metrics.mlqa_normalize("الكتاب", "ar") == "كتاب"
  # English "the" goes in both scripts; Unicode punctuation only in MLQA's.
  assert metrics.mlqa_normalize("the “answer”", "en") == "answer"
  assert metrics.squad_normalize("the “answer”") == "“answer”"
  # zh F1 over characters: pred 北京大学 vs gold 北京 -> P=1/2, R=1.
  assert metrics.mlqa_f1("北京大学", "北京", "zh") == pytest.approx(2 / 3)
  out = metrics.qa_scores({"a": ("北京",)}, {"a": "北京。"}, lang="zh")
  assert out == {"exact_match": 100.0, "f1": 100.0}
  with pytest.raises(DataError, match="not 'fi'"):
    metrics.mlqa_normalize("x", "fi")


def test_bucc_f1_hand_case():
  gold = {("zh-1", "en-1"), ("zh-2", "en-2"), ("zh-3", "en-3"), ("zh-4", "en-4")}
  pred = {("zh-1", "en-1"), ("zh-2", "en-9")}
  out = metrics.bucc_f1(gold, pred)
  assert out["precision"] == 50.0 and out["recall"] == 25.0
  assert out["f1"] == pytest.approx(100 * 2 * 0.5 * 0.25 / 0.75)
  assert metrics.bucc_f1(gold, set())["f1"] == 0.0


def test_gold_answers_needs_unique_ids():
  ex = QAExample("q1", "Who?", "Ada wrote it.", (Answer("Ada", 0),))
  assert metrics.gold_answers([ex]) == {"q1": ("Ada",)}
  with pytest.raises(DataError, match="appears twice"):
    metrics.gold_answers([ex, ex])
