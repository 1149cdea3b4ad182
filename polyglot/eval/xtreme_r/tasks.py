"""XTREME-R (Ruder et al., 2021): its tasks on the evaluation core, their files, its score.

XTREME-R keeps seven of XTREME's tasks with more languages (`XTREME_R_TASK2LANGS` of
google-research/xtreme `evaluate.py`), read from the same files as XTREME's
(`polyglot.eval.xtreme.tasks`), and adds XCOPA (multiple choice, accuracy; files
as XTREME's `scripts/download_data.sh` writes them, or cambridgeltl/xcopa's
`data/<lang>/{val,test}.<lang>.jsonl`), LAReQA and Mewsli-X (retrieval by mAP@20;
their readers and metric are in `readers` and `metrics`; they are not yet tasks
here, so the overall score is the mean over the eight tasks run, not XTREME-R's
ten). The overall score is the mean over tasks (`evaluate.py`'s `all_task`).

XCOPA fine-tunes on English COPA (`train-en.jsonl`, 400 examples) with
XTREME-R's settings (`gin/eval/xtreme_r.gin`); XTREME-R first fine-tunes on
SIQA, a stage not run here. XTREME's download blanks the XCOPA test labels
(every label 0): such a file is refused with the fix (cambridgeltl/xcopa's
labelled test files).
"""
import dataclasses

from polyglot.eval import readers as core_readers
from polyglot.eval.benchmarks import Benchmark
from polyglot.eval.tasks import ANY_DIR, LANG, FileLayout, TaskSpec
from polyglot.eval.xtreme import tasks as xtreme
from polyglot.eval.xtreme_r import readers

core_readers.register_file_format("xcopa_jsonl", lambda f, lang, labels: readers.read_xcopa(f.path))

XCOPA = TaskSpec(
    "xcopa", "multiple_choice", "accuracy", readers.XCOPA_LANGUAGES,
    (FileLayout("xcopa", rf"{ANY_DIR}(?P<split>train|test)-{LANG}\.jsonl", "xcopa_jsonl"),
     FileLayout("xcopa", rf"{ANY_DIR}val-{LANG}\.jsonl", "xcopa_jsonl", split="dev"),
     FileLayout("xcopa", rf"{ANY_DIR}val\.{LANG}\.jsonl", "xcopa_jsonl", split="dev"),
     FileLayout("xcopa", rf"{ANY_DIR}test\.{LANG}\.jsonl", "xcopa_jsonl", split="test")),
    {})


def _more_languages(name: str, *extra: str) -> TaskSpec:
  """XTREME's task with XTREME-R's languages: XTREME's plus `extra`."""
  spec = xtreme.TASKS[name]
  return dataclasses.replace(spec, languages=(*spec.languages, *extra))


TASKS: dict[str, TaskSpec] = {  # XTREME_R_TASK2LANGS
    "xnli": _more_languages("xnli"),
    "xcopa": XCOPA,
    "udpos": _more_languages("udpos", "lt", "pl", "uk", "wo", "ro"),
    "panx": _more_languages("panx", "qu", "pl", "uk", "az", "lt", "pa", "gu", "ro"),
    "xquad": _more_languages("xquad", "ro"),
    "mlqa": _more_languages("mlqa"),
    "tydiqa": _more_languages("tydiqa"),
    "tatoeba": _more_languages("tatoeba", "az", "lt", "pl", "uk", "ro"),
}

CATEGORIES = {  # the XTREME-R paper's task table
    "xnli": "Classification", "xcopa": "Classification",
    "udpos": "Structured prediction", "panx": "Structured prediction",
    "xquad": "Question answering", "mlqa": "Question answering", "tydiqa": "Question answering",
    "tatoeba": "Retrieval",
}

BENCHMARK = Benchmark(
    name="xtreme_r", title="XTREME-R", tasks=TASKS, gin_file="eval/xtreme_r.gin",
    categories=CATEGORIES, average="tasks",
    score_note=("Scores: accuracy (XNLI, XCOPA, Tatoeba), F1 (UD-POS, WikiANN-NER), mean of "
                "exact match and F1 (XQuAD, MLQA, TyDi QA); percent. The overall score is the "
                "mean over the tasks run; LAReQA and Mewsli-X are not among them."))
