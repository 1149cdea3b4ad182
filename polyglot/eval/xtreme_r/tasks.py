"""XTREME-R (Ruder et al., 2021): its tasks on the evaluation core, their files, its score.

XTREME-R keeps seven of XTREME's tasks with more languages (`XTREME_R_TASK2LANGS` of
google-research/xtreme `evaluate.py`), read from the same files as XTREME's
(`polyglot.eval.xtreme.tasks`), and adds XCOPA (multiple choice, accuracy; files
as XTREME's `scripts/download_data.sh` writes them, or cambridgeltl/xcopa's
`data/<lang>/{val,test}.<lang>.jsonl`), LAReQA and Mewsli-X (retrieval, mAP@20).
The overall score is the mean over tasks (`evaluate.py`'s `all_task`); with all
ten run, it is XTREME-R's.

XCOPA fine-tunes as `scripts/train_xcopa.sh` does, with XTREME-R's settings
(`gin/eval/xtreme_r.gin`) for both stages: first on Social IQa
(`siqa/socialIQa_v1.4_trn.jsonl`, 33,410 examples of 3 choices; the
intermediate stage, skipped when the file is absent), then from that model on
English COPA (`train-en.jsonl`, 400 examples). XTREME's download blanks the
XCOPA test labels (every label 0): such a file is refused with the fix
(cambridgeltl/xcopa's labelled test files).

LAReQA (`lareqa/xquad-r/<lang>.json`, test) ranks one pool, every answer
sentence of the 11 languages, for every question; Mewsli-X ranks the
candidate entities (`candidate_set_entities.jsonl`, beside the mentions) for
each WikiNews mention, from `wikinews_mentions-{dev,test}.jsonl` (every
language in one file, as `scripts/download_mewslix_data.sh` leaves them) or
`wikinews_mentions/{dev,test}-<lang>.jsonl`. Both embed with the frozen encoder,
as `scripts/run_eval_mewslix.sh` does by default (XTREME-R's baselines
fine-tune a dual encoder first: `train_lareqa.sh`, `train_mewslix.sh`, not run here).
"""
import dataclasses
import functools

from polyglot.eval import readers as core_readers
from polyglot.paths import Path
from polyglot.eval.benchmarks import Benchmark
from polyglot.eval.tasks import ANY_DIR, INTERMEDIATE, LANG, FileLayout, TaskSpec
from polyglot.eval.xtreme import tasks as xtreme
from polyglot.eval.xtreme_r import readers

core_readers.register_file_format("xcopa_jsonl", lambda f, lang, labels: readers.read_xcopa(f.path))

@functools.lru_cache(maxsize=2)
def _entities(path: str, stat: str) -> tuple[readers.Candidate, ...]:
  """Mewsli-X's entity pool, read once for all languages (keyed by the file's stat too)."""
  del stat
  return readers.read_mewslix_candidates(Path(path))


def _mewslix(f, lang: str, labels) -> readers.RetrievalSet:
  pool = f.partners[0]
  return readers.read_mewslix(f.path, _entities(str(pool), repr(pool.stat())), lang)


core_readers.register_file_format(
    "lareqa_json", lambda f, lang, labels: readers.read_lareqa_language(f.path, lang))
core_readers.register_file_format("mewslix_jsonl", _mewslix)
core_readers.register_file_format("siqa_jsonl", lambda f, lang, labels: readers.read_siqa(f.path))

XCOPA = TaskSpec(
    "xcopa", "multiple_choice", "accuracy", readers.XCOPA_LANGUAGES,
    (FileLayout("xcopa", rf"{ANY_DIR}(?P<split>train|test)-{LANG}\.jsonl", "xcopa_jsonl"),
     FileLayout("xcopa", rf"{ANY_DIR}val-{LANG}\.jsonl", "xcopa_jsonl", split="dev"),
     FileLayout("xcopa", rf"{ANY_DIR}val\.{LANG}\.jsonl", "xcopa_jsonl", split="dev"),
     FileLayout("xcopa", rf"{ANY_DIR}test\.{LANG}\.jsonl", "xcopa_jsonl", split="test"),
     FileLayout("siqa", rf"{ANY_DIR}socialIQa_v1\.4_trn\.jsonl", "siqa_jsonl", lang="en",
                split=INTERMEDIATE)),
    {})


LAREQA = TaskSpec(
    "lareqa", "retrieval", "map_at_20", readers.LAREQA_LANGUAGES,
    (FileLayout("lareqa", rf"{ANY_DIR}xquad-r/{LANG}\.json", "lareqa_json", split="test"),), {})

_ENTITIES = (r"\g<dir>candidate_set_entities.jsonl",)
_MENTIONS_DIR = rf"(?P<dir>{ANY_DIR})wikinews_mentions"
MEWSLIX = TaskSpec(
    "mewslix", "retrieval", "map_at_20", readers.MEWSLIX_LANGUAGES,
    (FileLayout("mewslix", rf"{_MENTIONS_DIR}/(?P<split>dev|test)-{LANG}\.jsonl", "mewslix_jsonl",
                partners=_ENTITIES),
     *(FileLayout("mewslix", rf"{_MENTIONS_DIR}-(?P<split>dev|test)\.jsonl",
                  "mewslix_jsonl", lang=lang, partners=_ENTITIES)
       for lang in readers.MEWSLIX_LANGUAGES)),
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
    "mewslix": MEWSLIX,
    "lareqa": LAREQA,
}

CATEGORIES = {  # the XTREME-R paper's task table
    "xnli": "Classification", "xcopa": "Classification",
    "udpos": "Structured prediction", "panx": "Structured prediction",
    "xquad": "Question answering", "mlqa": "Question answering", "tydiqa": "Question answering",
    "tatoeba": "Retrieval", "mewslix": "Retrieval", "lareqa": "Retrieval",
}

BENCHMARK = Benchmark(
    name="xtreme_r", title="XTREME-R", tasks=TASKS, gin_file="eval/xtreme_r.gin",
    categories=CATEGORIES, average="tasks",
    score_note=("Scores: accuracy (XNLI, XCOPA, Tatoeba), F1 (UD-POS, WikiANN-NER), mean of "
                "exact match and F1 (XQuAD, MLQA, TyDi QA), mAP@20 with the frozen encoder "
                "(Mewsli-X, LAReQA); percent. The overall score is the mean over the tasks run."))
