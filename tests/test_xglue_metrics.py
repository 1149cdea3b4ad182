"""XGLUE metrics against the official scorer's own code on random cases.

The reference is microsoft/XGLUE `evaluation/xglue_evaluate.py` (commit e417c4c),
its functions copied below verbatim (trailing spaces dropped). nDCG is also
checked against scikit-learn's `ndcg_score`, which the scorer calls, and against
its definition (the mean DCG over the orderings of tied documents).
"""
import builtins
import functools
import itertools
import json
import math
import os
import random
import types
import warnings

import numpy
import pytest

from polyglot.errors import DataError
from polyglot.eval import metrics as core_metrics
from polyglot.eval.xglue import metrics, readers
from polyglot.eval.metrics import qa_scores
from polyglot.eval.readers import read_squad_json

try:
  from seqeval.metrics import f1_score, precision_score
except ImportError:
  f1_score = precision_score = None
try:
  from sklearn.metrics import ndcg_score
except ImportError:
  ndcg_score = None

needs_seqeval = pytest.mark.skipif(f1_score is None, reason="seqeval is not installed")
needs_sklearn = pytest.mark.skipif(ndcg_score is None, reason="scikit-learn is not installed")


# ---- The scorer's environment ----
# The functions below read the globals `args` and `task2lg` (bound per test),
# open files in the platform's encoding (here UTF-8, the files' encoding), and
# ran on a numpy whose `np.array` of ragged lists made a 1-D object array
# (numpy >= 1.24 raises instead). QG and NTG (generation) are not scored here.
# MLQA's own `evaluate` (facebookresearch/MLQA, CC BY-NC 4.0) is not copied: it
# stands in as XTREME's `qa_scores`, so the MLQA case checks the files only.

class _Numpy2020:
  asarray = staticmethod(numpy.asarray)

  @staticmethod
  def array(values):
    if values and isinstance(values[0], list):
      out = numpy.empty(len(values), dtype=object)
      for i, row in enumerate(values):
        out[i] = row
      return out
    return numpy.array(values)


np = _Numpy2020
open = functools.partial(builtins.open, encoding="utf-8")  # pylint: disable=redefined-builtin
args = None
task2lg = None
load_qg_ntg_data = sacrebleu = None


def mlqa_evaluate(dataset, predictions, lang):
  gold = {qa["id"]: [a["text"] for a in qa["answers"]]
          for article in dataset for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
  return qa_scores(gold, predictions, lang)


# ---- microsoft/XGLUE evaluation/xglue_evaluate.py, verbatim ----
# MIT License, Copyright (c) Microsoft Corporation (the repository's LICENSE-CODE).
# pylint: disable=bad-indentation,unused-variable,consider-using-with
def simple_accuracy(preds, labels):
    return (preds == labels).mean()

def simple_ndcg(preds, labels, guids):
    ndcgs = []
    query2content = {}
    for guid, pred, label in zip(guids, preds, labels):
        query = guid
        if not query in query2content:
            query2content[query] = [[float(pred)], [float(label)]]
        else:
            query2content[query][0].append(float(pred))
            query2content[query][1].append(float(label))

    for key in query2content.keys():
        if len(query2content[key][1]) < 2 or len(query2content[key][0]) < 2:
            continue
        ndcgs.append(ndcg_score(np.asarray([query2content[key][1]]), np.asarray([query2content[key][0]])))
    return np.array(ndcgs).mean()



def load_mlqa_data(task, lg):
    dataset_file = os.path.join(args.ground_truth_dir, "{0}/MLQA_V1/{1}/{1}-context-{2}-question-{2}.json".format(task, args.split, lg))
    pred_file = os.path.join(args.prediction_dir, "{0}/{1}.prediction".format(task, lg))
    dataset = json.load(open(dataset_file))
    preds = json.load(open(pred_file))
    return dataset, preds

def load_pawsx_data(task, lg):
    pred_file = os.path.join(args.prediction_dir, "{0}/{1}.prediction".format(task, lg))
    label_file = os.path.join(args.ground_truth_dir, "{0}/{1}/{2}_2k.tsv".format(task, lg, args.split))
    preds = []
    labels = []
    for item in open(pred_file):
        preds.append(item.strip())
    count = 0
    for item in open(label_file):
        if count == 0:
            count += 1
            continue
        if not len(item.strip()) == 0:
            labels.append(item.split("\t")[-1].strip())
    return np.array(labels), np.array(preds)

def load_xnli_data(task, lg):
    pred_file = os.path.join(args.prediction_dir, "{0}/{1}.prediction".format(task, lg))
    label_file = os.path.join(args.ground_truth_dir, "{0}/{1}.{2}".format(task, lg, args.split))
    labels = []
    preds = []
    for item in open(pred_file):
        preds.append(item.strip())
    count = 0
    for line in open(label_file):
        label = line.split("\t")[-1]
        labels.append(label.strip())
    return np.array(preds), np.array(labels)

def load_ner_pos_data(task,lg):
    pred_file = os.path.join(args.prediction_dir, "{0}/{1}.prediction".format(task, lg))
    label_file = os.path.join(args.ground_truth_dir, "{0}/{1}.{2}".format(task, lg, args.split))

    preds, labels = [], []
    pred = []
    label = []
    for item in open(pred_file):
        if len(item.strip()) == 0 and len(pred) > 0:
            preds.append(pred)
            pred = []
            continue
        pred.append(item.strip())

    if len(pred) > 0:
        preds.append(pred)

    for item in open(label_file):
        if not (len(item.strip()) == 0 or item.startswith("-DOCSTART-")):
            label.append(item.split()[-1].strip())
        elif len(label) > 0:
            labels.append(label)
            label = []
    if len(label) > 0:
        labels.append(label)

    for i in range(len(labels)):
        while len(labels[i]) > len(preds[i]):
            preds[i].append("O")
    return np.array(preds), np.array(labels)

def load_data(task, lg):
    pred_file = os.path.join(args.prediction_dir, "{0}/{1}.prediction".format(task, lg))
    label_file = os.path.join(args.ground_truth_dir, "{0}/xglue.{1}.{2}.{3}".format(task, task.lower(), lg, args.split))
    preds, labels, guids = [], [], []
    last_query = ""
    for item in open(pred_file):
        preds.append(item.strip())

    guid = 0
    for item in open(label_file):
        if task == "WPR" and (not item.split("\t")[0] == last_query) and len(last_query) > 0:
            guid += 1
        last_query = item.split("\t")[0]
        labels.append(item.split("\t")[-1].strip())
        guids.append(guid)

    return np.array(preds), np.array(labels), np.array(guids)

def get_score_by_task(task):
    results = {}
    for lg in task2lg[task].split():
        preds = []
        labels = []
        guid = 0
        guids = []
        if task == "MLQA":
            datasets, preds = load_mlqa_data(task, lg)
        elif task in ["NC", "QADSM", "QAM", "WPR"]:
            preds, labels, guids = load_data(task, lg)
        elif task in ["QG", "NTG"]:
            preds, labels = load_qg_ntg_data(task, lg)
        elif task in ["NER", "POS"]:
            preds, labels  = load_ner_pos_data(task, lg)
        elif task == "XNLI":
            labels, preds = load_xnli_data(task, lg)
        elif task == "PAWSX":
            labels, preds = load_pawsx_data(task, lg)

        if task == "MLQA":
            results[lg] = mlqa_evaluate(datasets["data"], preds, lg)["f1"]/100 #Normalize
        elif task == "NER":
            results[lg] = f1_score(labels, preds)
        elif task == "POS":
            results[lg] = precision_score(labels, preds)
        elif task in ["NC", "XNLI", "PAWSX", "QADSM", "QAM"]:
            results[lg] = simple_accuracy(preds, labels)
        elif task == "WPR":
            results[lg] = simple_ndcg(preds, labels, guids)
        elif task == "QG" or task == "NTG":
            results[lg] = sacrebleu.corpus_bleu(preds, [labels], lowercase=True).score/100 #Normalize
    avg = 0
    count = 0
    for key in results.keys():
        avg += results[key]
        count += 1
    avg /= count
    results["avg"] = avg
    return results
# pylint: enable=bad-indentation,unused-variable,consider-using-with
# ---- end of the copy ----


# ---- Random gold files in the released layout, and predictions ----

_WORDS = ("the", "Haus", "été", "新闻", "ciudad", "and", "de", "東京", "river", "a")


def _text(rng, n=4):
  return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, n)))


def _classification(task, labels, columns):
  def make(rng, lang):
    rows = [[_text(rng) for _ in range(columns)] + [rng.choice(labels)] for _ in range(60)]
    name = (f"XNLI/{lang}.dev" if task == "XNLI"
            else f"{task}/xglue.{task.lower()}.{lang}.dev")
    preds = [rng.choice(labels) for _ in rows]
    return name, "".join("\t".join(r) + "\n" for r in rows), preds
  return make


def _pawsx(rng, lang):
  rows = [f"{i}\t{_text(rng)}\t{_text(rng)}\t{rng.choice('01')}\n" for i in range(1, 61)]
  rows.insert(rng.randrange(len(rows)), "\n")  # the scorer and the reader skip blank lines
  preds = [rng.choice("01") for _ in range(60)]
  return f"PAWSX/{lang}/dev_2k.tsv", "id\tsentence1\tsentence2\tlabel\n" + "".join(rows), preds


def _wpr(rng, lang):
  queries = ["cheap flights", "京都 天気", "", "météo paris", "python list"]
  lines, preds = [], []
  for _ in range(25):
    query = rng.choice(queries)
    all_bad = rng.random() < 0.2
    for _ in range(rng.randint(1, 6)):
      label = 0 if all_bad else rng.randint(0, 4)
      lines.append(f"{query}\t{_text(rng)}\t{_text(rng, 8)}\t{label}\n")
      # labels tie a lot; half the languages also predict real-valued scores
      preds.append(rng.randint(0, 4) if lang == "en" else rng.choice([0.5, 2.0, rng.random()]))
  return f"WPR/xglue.wpr.{lang}.dev", "".join(lines), preds


def _tagging(task, labels):
  def make(rng, lang):
    text, preds = ["-DOCSTART- O\n\n"], []
    for _ in range(40):
      tags = [rng.choice(labels) for _ in range(rng.randint(1, 9))]
      text.append("".join(f"{_text(rng, 1)} {t}\n" for t in tags) + "\n")
      pred = [t if rng.random() < 0.6 else rng.choice(labels) for t in tags]
      preds.append(pred[:rng.randint(1, len(pred))] if rng.random() < 0.2 else pred)
    return f"{task}/{lang}.dev", "".join(text), preds
  return make


def _mlqa(rng, lang):
  qas, preds = [], {}
  for i in range(30):
    answers = [{"text": _text(rng, 3), "answer_start": 0} for _ in range(rng.randint(1, 3))]
    qas.append({"id": f"q{i}", "question": _text(rng), "answers": answers})
    if rng.random() < 0.9:  # the rest go unanswered
      preds[f"q{i}"] = rng.choice([answers[0]["text"], _text(rng, 3)])
  data = {"version": "1.0", "data": [{"title": "t", "paragraphs": [
      {"context": " ".join(_WORDS), "qas": qas}]}]}
  return (f"MLQA/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json",
          json.dumps(data, ensure_ascii=False), preds)


_GOLD = {
    "NC": _classification("NC", readers.NC_LABELS, 2),
    "QADSM": _classification("QADSM", readers.QADSM_LABELS, 3),
    "QAM": _classification("QAM", readers.QAM_LABELS, 2),
    "XNLI": _classification("XNLI", readers.XNLI_LABELS, 2),
    "PAWSX": _pawsx,
    "WPR": _wpr,
    "NER": _tagging("NER", readers.NER_LABELS),
    "POS": _tagging("POS", readers.POS_LABELS),
    "MLQA": _mlqa,
}
_READ = {
    "NC": readers.read_nc, "QADSM": readers.read_qadsm, "QAM": readers.read_qam,
    "XNLI": readers.read_xnli, "PAWSX": readers.read_pawsx, "WPR": readers.read_wpr,
    "NER": lambda p: readers.read_tagged(p, readers.NER_LABELS),
    "POS": lambda p: readers.read_tagged(p, readers.POS_LABELS),
    "MLQA": read_squad_json,
}


@pytest.mark.parametrize("task", metrics.UNDERSTANDING_TASKS)
def test_each_task_scores_as_the_official_scorer(task, tmp_path, monkeypatch):
  if task in ("NER", "POS") and f1_score is None:
    pytest.skip("seqeval is not installed")
  if task == "WPR" and ndcg_score is None:
    pytest.skip("scikit-learn is not installed")
  langs = ("en", metrics.SCORED_LANGUAGES[task][-1])  # MLQA: zh, mixed segmentation
  monkeypatch.setitem(globals(), "task2lg", {task: " ".join(langs)})
  monkeypatch.setitem(globals(), "args", types.SimpleNamespace(
      ground_truth_dir=str(tmp_path / "gold"), prediction_dir=str(tmp_path / "pred"), split="dev"))
  rng = random.Random(task)
  ours = {}
  for lang in langs:
    name, text, preds = _GOLD[task](rng, lang)
    gold = tmp_path / "gold" / name
    gold.parent.mkdir(parents=True, exist_ok=True)
    gold.write_text(text, encoding="utf-8")
    metrics.write_predictions(tmp_path / "pred", task, lang, preds)
    ours[lang] = metrics.score(task, lang, _READ[task](gold), preds)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # seqeval: "NOUN seems not to be NE tag"
    theirs = get_score_by_task(task)
  assert ours == pytest.approx({lang: 100 * theirs[lang] for lang in langs}, rel=1e-12)
  assert sum(ours.values()) / len(langs) == pytest.approx(100 * theirs["avg"], rel=1e-12)


def _random_query(rng):
  n = rng.randint(1, 7)
  gold = [0] * n if rng.random() < 0.15 else [rng.randint(0, 4) for _ in range(n)]
  scores = ([rng.randint(0, 4) for _ in range(n)] if rng.random() < 0.5
            else [rng.choice([0.25, 1.0, rng.random()]) for _ in range(n)])
  return gold, scores


@needs_sklearn
def test_wpr_ndcg_matches_simple_ndcg():
  rng = random.Random(0)
  for _ in range(30):
    ids, gold, scores = [], [], []
    for qid in range(rng.randint(1, 15)):
      g, s = _random_query(rng)
      ids += [qid] * len(g)
      gold += g
      scores += s
    if all(ids.count(q) < 2 for q in set(ids)):
      continue
    expected = simple_ndcg(numpy.array([str(s) for s in scores]),
                           numpy.array([str(g) for g in gold]), numpy.array(ids))
    assert core_metrics.mean_ndcg(ids, [str(g) for g in gold], scores) == pytest.approx(
        100 * expected, rel=1e-12)


@needs_sklearn
def test_ndcg_matches_sklearn():
  rng = random.Random(1)
  for _ in range(200):
    gold, scores = _random_query(rng)
    if len(gold) < 2:
      continue
    expected = ndcg_score(numpy.asarray([gold], dtype=float), numpy.asarray([scores], dtype=float))
    assert core_metrics.ndcg(gold, scores) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def _dcg(gains):
  return sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))


def test_ndcg_is_the_mean_over_orderings_of_ties():
  # Independent of scikit-learn: rank documents by score, every order of tied
  # documents equally likely, and divide by the DCG of the gold ordering.
  rng = random.Random(2)
  for _ in range(100):
    gold, scores = _random_query(rng)
    ideal = _dcg(sorted(gold, reverse=True))
    orders = [order for order in itertools.permutations(range(len(gold)))
              if all(scores[a] >= scores[b] for a, b in zip(order, order[1:]))]
    mean_dcg = sum(_dcg([gold[i] for i in order]) for order in orders) / len(orders)
    expected = mean_dcg / ideal if ideal else 0.0
    assert core_metrics.ndcg(gold, scores) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_ndcg_hand_cases():
  assert core_metrics.ndcg([3, 2, 0], [0.9, 0.5, 0.1]) == 1.0
  assert core_metrics.ndcg([0, 0, 0], [1, 2, 3]) == 0.0  # all bad: 0, and it counts in the mean
  # One tie over both documents: the mean of the two orders.
  assert core_metrics.ndcg([1, 0], [2, 2]) == pytest.approx((1 + 1 / math.log2(3)) / 2)
  # Single-document queries are skipped; the all-zero query counts as 0.
  assert core_metrics.mean_ndcg([0, 1, 1, 2, 2], ["4", "2", "1", "0", "0"], [1, 5, 3, 2, 1]) == 50.0


def test_empty_and_degenerate_inputs_raise_where_the_scorer_gives_nan():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    assert math.isnan(simple_accuracy(numpy.array([]), numpy.array([])))
    assert math.isnan(simple_ndcg(numpy.array(["1", "2"]), numpy.array(["0", "3"]),
                                  numpy.array([0, 1])))
  with pytest.raises(DataError, match="equally many"):
    metrics.score("QAM", "en", [], [])
  with pytest.raises(DataError, match="two or more documents"):
    core_metrics.mean_ndcg([0, 1], ["0", "3"], [1, 2])
  with pytest.raises(DataError, match="one query id, gold label and score"):
    core_metrics.mean_ndcg([0, 0], ["0"], [1, 2])
  with pytest.raises(DataError, match="score 1 is nan"):
    core_metrics.mean_ndcg([0, 0], ["0", "1"], [1, float("nan")])


@needs_seqeval
@pytest.mark.parametrize("labels", [readers.NER_LABELS, readers.POS_LABELS])
def test_tag_scores_match_seqeval_with_padding(labels):
  rng = random.Random(3)
  for _ in range(20):
    gold = [[rng.choice(labels) for _ in range(rng.randint(1, 10))] for _ in range(12)]
    pred = [[t if rng.random() < 0.7 else rng.choice(labels) for t in g][:rng.randint(1, len(g))]
            for g in gold]
    padded = [p + ["O"] * (len(g) - len(p)) for g, p in zip(gold, pred)]
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      assert metrics.ner_f1(gold, pred) == pytest.approx(100 * f1_score(gold, padded))
      assert metrics.pos_precision(gold, pred) == pytest.approx(
          100 * precision_score(gold, padded))


def test_pos_score_is_chunk_precision():
  # CCONJ and SCONJ are both of type "CONJ" to seqeval >= 0.0.16: confusing
  # them still matches; a run of NOUNs is one chunk.
  gold = [["SCONJ", "NOUN", "NOUN", "VERB"]]
  assert metrics.pos_precision(gold, [["CCONJ", "NOUN", "NOUN", "VERB"]]) == 100.0
  assert metrics.pos_precision(gold, [["SCONJ", "NOUN", "PROPN", "VERB"]]) == 50.0
  # Padding with O adds no predicted chunk: precision ignores cut-off words.
  assert metrics.pos_precision(gold, [["SCONJ", "NOUN", "NOUN"]]) == 100.0
  with pytest.raises(DataError, match="predicted sentence 0 has 5 tags for 4 words"):
    metrics.pad_tag_predictions(gold, [["X"] * 5])
  with pytest.raises(DataError, match="2 predicted sentences for 1 gold"):
    metrics.pad_tag_predictions(gold, [["X"], ["X"]])


def test_averages():
  by_lang = {lang: float(i) for i, lang in enumerate(metrics.SCORED_LANGUAGES["NER"])}
  assert metrics.task_average("NER", {**by_lang, "fr": 1000.0}) == 1.5  # fr is not scored
  with pytest.raises(DataError, match="NER has no score for nl"):
    metrics.task_average("NER", {k: v for k, v in by_lang.items() if k != "nl"})
  scores = {task: {lang: 10.0 * k for lang in langs}
            for k, (task, langs) in enumerate(metrics.SCORED_LANGUAGES.items())}
  assert metrics.understanding_score(scores) == 40.0
  with pytest.raises(DataError, match="no scores for QAM"):
    metrics.understanding_score({t: v for t, v in scores.items() if t != "QAM"})


def test_prediction_files(tmp_path):
  path = metrics.write_predictions(tmp_path, "QADSM", "fr", ["Good", "Bad"])
  assert path == str(tmp_path / "QADSM" / "fr.prediction")
  assert (tmp_path / "QADSM" / "fr.prediction").read_text() == "Good\nBad\n"
  assert metrics.prediction_text("WPR", [4, numpy.int64(0), 0.25]) == "4\n0\n0.25\n"
  assert metrics.prediction_text("NER", [["B-PER", "I-PER"], ["O"]]) == "B-PER\nI-PER\n\nO\n\n"
  assert json.loads(metrics.prediction_text("MLQA", {"q1": "東京"})) == {"q1": "東京"}
  assert metrics.prediction_text("MLQA", {"q1": "東京"}).isascii()
  with pytest.raises(DataError, match=r"QAM prediction 1 is 'yes', not one of \('0', '1'\)"):
    metrics.prediction_text("QAM", ["1", "yes"])
  with pytest.raises(DataError, match="POS prediction 0 has tag 'O'"):
    metrics.prediction_text("POS", [["NOUN", "O"]])
  with pytest.raises(DataError, match="NER prediction 1 has no tags"):
    metrics.prediction_text("NER", [["O"], []])
  with pytest.raises(DataError, match="WPR prediction 0 is True"):
    metrics.prediction_text("WPR", [True])
  with pytest.raises(DataError, match=r"XGLUE scores PAWSX in \('de', 'en', 'es', 'fr'\), not 'zh'"):
    metrics.write_predictions(tmp_path, "PAWSX", "zh", ["0"])
  with pytest.raises(DataError, match="unknown XGLUE task 'QG'"):
    metrics.prediction_text("QG", ["a question"])


def test_unlabelled_gold_is_not_scored(tmp_path):
  path = tmp_path / "xglue.qam.de.test"
  path.write_text("wer ist das\tdas ist er\n", encoding="utf-8")
  with pytest.raises(DataError, match="the gold file is unlabelled"):
    metrics.score("QAM", "de", readers.read_qam(path), ["1"])
