"""XGLUE understanding scores, computed as the official scorer does.

The scorer is microsoft/XGLUE `evaluation/xglue_evaluate.py` (`get_score_by_task`);
it reports fractions, these functions percent.

| task | score | scorer | here |
|---|---|---|---|
| NC, XNLI, PAWS-X, QADSM, QAM | accuracy | `simple_accuracy` | XTREME's `accuracy` |
| NER | seqeval micro F1 over entities | `f1_score(labels, preds)` | `ner_f1` (XTREME's `span_f1`) |
| POS | seqeval micro precision over chunks | `precision_score(labels, preds)` | `pos_precision` (`span_f1`) |
| MLQA | F1 of MLQA's `mlqa_evaluation_v1.py` | `mlqa_evaluate(...)["f1"]` | `mlqa_f1` (XTREME's `qa_scores`) |
| WPR | mean nDCG over queries | `simple_ndcg` (scikit-learn `ndcg_score`) | `mean_ndcg` |

XGLUE's README calls the POS score accuracy, but the scorer (and the
baseline's `run_ner.py`) reports seqeval's precision: UPOS tags read as IOB
chunks (NOUN is prefix "N" + type "OUN"), runs of one tag merged. XTREME's
`span_f1` reproduces seqeval >= 0.0.16 (the version the scorer gets today);
seqeval 0.0.12, current when XGLUE's baseline was scored (May 2020), took the
whole tag as the type, so CCONJ and SCONJ (type "CONJ" for both today) were
different chunk types then. Predicted sentences shorter than their gold
sentence are padded with "O", as the scorer does.

The scorer averages a task over the languages of its `task2lg`
(`SCORED_LANGUAGES`, English included), and the leaderboard's
XGLUE-Understanding Score averages tasks 1-9 (`understanding_score`).
Where the scorer gives NaN (no examples, no query with two documents),
crashes, or truncates or broadcasts silently (prediction and gold files of
different lengths), these functions raise `DataError`.
"""
from __future__ import annotations

import json
import numbers
from collections.abc import Mapping, Sequence

from polyglot import paths
from polyglot.errors import DataError
from polyglot.eval.xglue import readers
from polyglot.eval.metrics import accuracy, gold_answers, mean_ndcg, number, qa_scores, span_f1
from polyglot.eval.readers import QAExample

# xglue_evaluate.py `task2lg`: the languages each task is averaged over, in its order.
SCORED_LANGUAGES: dict[str, tuple[str, ...]] = {
    "NER": ("de", "en", "es", "nl"),
    "POS": ("pl", "ar", "ru", "bg", "de", "el", "en", "es", "fr", "hi", "it", "nl", "pt", "th",
            "tr", "ur", "vi", "zh"),
    "NC": ("de", "en", "es", "fr", "ru"),
    "MLQA": ("ar", "de", "en", "es", "hi", "vi", "zh"),
    "XNLI": ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi",
             "zh"),
    "PAWSX": ("de", "en", "es", "fr"),
    "QADSM": ("de", "en", "fr"),
    "WPR": ("de", "en", "es", "fr", "it", "pt", "zh"),
    "QAM": ("de", "en", "fr"),
}
# The leaderboard's tasks 1-9, named as the scorer's `--tasks` and the submission folders.
UNDERSTANDING_TASKS = ("NER", "POS", "NC", "MLQA", "XNLI", "PAWSX", "QADSM", "WPR", "QAM")
_LABELS = {"NC": readers.NC_LABELS, "XNLI": readers.XNLI_LABELS,
           "PAWSX": readers.PAWSX_LABELS, "QADSM": readers.QADSM_LABELS,
           "QAM": readers.QAM_LABELS, "NER": readers.NER_LABELS, "POS": readers.POS_LABELS}
_ACCURACY_TASKS = ("NC", "XNLI", "PAWSX", "QADSM", "QAM")


def _check_task(task: str, lang: str | None = None) -> None:
  if task not in SCORED_LANGUAGES:
    raise DataError(f"unknown XGLUE task {task!r}; known: {UNDERSTANDING_TASKS}")
  if lang is not None and lang not in SCORED_LANGUAGES[task]:
    raise DataError(f"XGLUE scores {task} in {SCORED_LANGUAGES[task]}, not {lang!r}")


def pad_tag_predictions(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
                        ) -> list[list[str]]:
  """`pred`'s sentences padded with "O" to their gold length, as the scorer's
  `load_ner_pos_data` pads predictions cut short (by a maximum sequence length)."""
  if len(gold) != len(pred):
    raise DataError(f"{len(pred)} predicted sentences for {len(gold)} gold sentences")
  for i, (g, p) in enumerate(zip(gold, pred)):
    if len(p) > len(g):
      raise DataError(f"predicted sentence {i} has {len(p)} tags for {len(g)} words")
  return [[*p, *["O"] * (len(g) - len(p))] for g, p in zip(gold, pred)]


def ner_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
  """seqeval's micro F1 (percent) over entities, short predictions padded with "O"."""
  return span_f1(gold, pad_tag_predictions(gold, pred))["f1"]


def pos_precision(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
  """seqeval's micro precision (percent) over UPOS chunks, XGLUE's POS score."""
  return span_f1(gold, pad_tag_predictions(gold, pred))["precision"]


def mlqa_f1(examples: Sequence[QAExample], predictions: Mapping[str, str], lang: str) -> float:
  """MLQA's F1 (percent), an unanswered question scoring 0 (XTREME's `qa_scores`)."""
  return qa_scores(gold_answers(examples), predictions, lang)["f1"]


def score(task: str, lang: str, examples: Sequence, predictions) -> float:
  """The scorer's value (percent) for one language of one task.

  `examples` are the gold file's (readers of `readers`; MLQA: `QAExample`s);
  `predictions` one label per example (WPR: a number per example; NER, POS:
  a tag sequence per sentence; MLQA: question id -> answer text).
  """
  _check_task(task, lang)
  if task == "MLQA":
    return mlqa_f1(examples, predictions, lang)
  if task in ("NER", "POS"):
    gold = [ex.tags for ex in examples]
    return ner_f1(gold, predictions) if task == "NER" else pos_precision(gold, predictions)
  if any(ex.label is None for ex in examples):
    raise DataError(f"{task} {lang}: the gold file is unlabelled ({examples[0].guid}); score "
                    "a file with labels")
  if task == "WPR":
    return mean_ndcg([ex.query_id for ex in examples], [ex.label for ex in examples], predictions)
  return accuracy([ex.label for ex in examples], list(predictions))


def task_average(task: str, by_lang: Mapping[str, float]) -> float:
  """A task's score: the mean over `SCORED_LANGUAGES[task]` (other languages ignored)."""
  _check_task(task)
  missing = [lang for lang in SCORED_LANGUAGES[task] if lang not in by_lang]
  if missing:
    raise DataError(f"{task} has no score for {', '.join(missing)}; XGLUE averages "
                    f"{', '.join(SCORED_LANGUAGES[task])}")
  return sum(by_lang[lang] for lang in SCORED_LANGUAGES[task]) / len(SCORED_LANGUAGES[task])


def understanding_score(scores: Mapping[str, Mapping[str, float]]) -> float:
  """The XGLUE-Understanding Score: the mean of the 9 tasks' `task_average`s.

  `scores` maps a task to its per-language scores, as `score` gives them.
  """
  missing = [task for task in UNDERSTANDING_TASKS if task not in scores]
  if missing:
    raise DataError(f"no scores for {', '.join(missing)}; the XGLUE-Understanding Score "
                    f"averages {', '.join(UNDERSTANDING_TASKS)}")
  return sum(task_average(t, scores[t]) for t in UNDERSTANDING_TASKS) / len(UNDERSTANDING_TASKS)


def _label_lines(task: str, predictions: Sequence[str]) -> str:
  for i, label in enumerate(predictions):
    if label not in _LABELS[task]:
      raise DataError(f"{task} prediction {i} is {label!r}, not one of {_LABELS[task]}")
  return "".join(f"{label}\n" for label in predictions)


def _score_lines(predictions: Sequence) -> str:
  lines = []
  for i, value in enumerate(predictions):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise DataError(f"WPR prediction {i} is {value!r}; write a relevance label 0-4 or a score")
    if isinstance(value, numbers.Integral):
      lines.append(f"{int(value)}\n")
    else:
      lines.append(f"{number(value, 'WPR prediction', i)!r}\n")
  return "".join(lines)


def _tag_lines(task: str, sentences: Sequence[Sequence[str]]) -> str:
  out = []
  for i, tags in enumerate(sentences):
    if not tags:  # an empty sentence would be an empty line, which the scorer misreads
      raise DataError(f"{task} prediction {i} has no tags; predict at least the first one (the "
                      "scorer pads a short sentence with O)")
    bad = [t for t in tags if t not in _LABELS[task]]
    if bad:
      raise DataError(f"{task} prediction {i} has tag {bad[0]!r}, not one of {_LABELS[task]}")
    out.append("".join(f"{t}\n" for t in tags) + "\n")
  return "".join(out)


def _qa_json(predictions: Mapping[str, str]) -> str:
  bad = [k for k, v in predictions.items() if not isinstance(k, str) or not isinstance(v, str)]
  if bad:
    raise DataError(f"MLQA prediction {bad[0]!r} is not question id (str) -> answer (str)")
  # ASCII escapes: the scorer opens the file in the platform's default encoding.
  return json.dumps(dict(predictions), ensure_ascii=True) + "\n"


def prediction_text(task: str, predictions) -> str:
  """The content of a `<task>/<lang>.prediction` file (Data_Format.txt,
  "XGLUE prediction file format"): one line per example, in the gold file's
  order; NER and POS a tag per line and a blank line after each sentence;
  MLQA one JSON object {question id: answer}."""
  _check_task(task)
  if task == "MLQA":
    return _qa_json(predictions)
  if task == "WPR":
    return _score_lines(predictions)
  if task in ("NER", "POS"):
    return _tag_lines(task, predictions)
  return _label_lines(task, predictions)


def write_predictions(out_dir: paths.PathLike, task: str, lang: str, predictions) -> str:
  """Writes `<out_dir>/<task>/<lang>.prediction`, the layout of a leaderboard
  submission (one folder per task, named as `UNDERSTANDING_TASKS`), and returns its path."""
  _check_task(task, lang)
  path = paths.join(out_dir, task, f"{lang}.prediction")
  paths.write_text(path, prediction_text(task, predictions))
  return path
