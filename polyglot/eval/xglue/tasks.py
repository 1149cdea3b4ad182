"""XGLUE (Liang et al., 2020): its nine understanding tasks, their files, its averaging.

Files of the released `xglue_full_dataset` (pass its folder as --data_dir),
recognised by name (`Data_Format.txt` of microsoft/XGLUE; readers in
`polyglot.eval.xglue.readers`):

| task | English training | evaluation (`<l>` a language) | type, score |
|---|---|---|---|
| ner | `NER/en.train` | `NER/<l>.{dev,test}` | tagging, entity F1 |
| pos | `POS/en.train` | `POS/<l>.{dev,test}` | tagging, chunk precision |
| nc | `NC/xglue.nc.en.train` | `NC/xglue.nc.<l>.{dev,test}` | classification, accuracy |
| mlqa | `MLQA/squad1.1/train-v1.1.json` | `MLQA/MLQA_V1/{dev,test}/...-<l>-question-<l>.json` | QA, F1 |
| xnli | `XNLI/multinli.train.en.tsv` | `XNLI/<l>.{dev,test}` | classification, accuracy |
| pawsx | `PAWSX/en/train.tsv` | `PAWSX/<l>/{dev,test}_2k.tsv` | classification, accuracy |
| qadsm | `QADSM/xglue.qadsm.en.train` | `QADSM/xglue.qadsm.<l>.{dev,test}` | classification, accuracy |
| wpr | `WPR/xglue.wpr.en.train` | `WPR/xglue.wpr.<l>.{dev,test}` | relevance grades, nDCG |
| qam | `QAM/xglue.qam.en.train` | `QAM/xglue.qam.<l>.{dev,test}` | classification, accuracy |

Scores are those of XGLUE's scorer (`evaluation/xglue_evaluate.py`): POS by
seqeval's chunk precision (what the scorer computes, though the README calls
it accuracy), MLQA by F1 alone, WPR by the mean nDCG over queries. WPR trains
as five-grade classification (the baseline's); its ranking score is the
expected grade under the softmax, which breaks the ties of an argmax (the
scorer reads any real number). A task's score is the mean over its languages
and the XGLUE-Understanding Score the mean over the nine tasks. Each scored
split's predictions are written as a leaderboard submission holds them:
`predictions/<split>/<TASK>/<l>.prediction` (`metrics.write_predictions`).

The generation tasks (QG, NTG) need a decoder and are out of scope for an
encoder stack. Model selection is on English dev (zero-shot transfer), where
the baseline selected on the mean over every language's dev set.
"""
from polyglot.eval import readers as core_readers
from polyglot.eval.benchmarks import Benchmark
from polyglot.eval.tasks import ANY_DIR, LANG, FileLayout, TaskSpec
from polyglot.eval.xglue import metrics, readers

_FORMATS = {
    "xglue_nc": lambda f, lang, labels: readers.read_nc(f.path),
    "xglue_qadsm": lambda f, lang, labels: readers.read_qadsm(f.path),
    "xglue_wpr": lambda f, lang, labels: readers.read_wpr(f.path),
    "xglue_qam": lambda f, lang, labels: readers.read_qam(f.path),
    "xglue_xnli": lambda f, lang, labels: readers.read_xnli(f.path),
    "xglue_pawsx": lambda f, lang, labels: readers.read_pawsx(f.path),
    "xglue_tagged": lambda f, lang, labels: readers.read_tagged(f.path, labels),
}
for _fmt, _reader in _FORMATS.items():
  core_readers.register_file_format(_fmt, _reader)

_SPLIT = r"(?P<split>train|dev|test)"


def _dotted(folder: str, prefix: str, fmt: str) -> tuple[FileLayout, ...]:
  """`<folder>/<prefix><lang>.<split>`: NC, QADSM, WPR, QAM (`xglue.nc.`), NER, POS ("")."""
  return (FileLayout(folder, rf"{ANY_DIR}{prefix}{LANG}\.{_SPLIT}", fmt),)


def _spec(name: str, task_type: str, metric: str, layouts: tuple[FileLayout, ...],
          labels: tuple[str, ...] = (), headline: tuple[str, ...] = ()) -> TaskSpec:
  return TaskSpec(name, task_type, metric, metrics.SCORED_LANGUAGES[name.upper()], layouts,
                  {}, labels=labels, headline=headline)


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    _spec("ner", "tagging", "seqeval_f1", _dotted("NER", "", "xglue_tagged"),
          readers.NER_LABELS),
    _spec("pos", "tagging", "seqeval_f1", _dotted("POS", "", "xglue_tagged"),
          readers.POS_LABELS, headline=("precision",)),
    _spec("nc", "classification", "accuracy", _dotted("NC", r"xglue\.nc\.", "xglue_nc"),
          readers.NC_LABELS),
    _spec("mlqa", "qa", "mlqa",
          (FileLayout("MLQA", rf"{ANY_DIR}squad1\.1/train-v1\.1\.json", "squad_json", lang="en",
                      split="train"),
           FileLayout("MLQA", rf"{ANY_DIR}(?P<split>dev|test)-context-{LANG}-question-(?P=lang)"
                      r"\.json", "squad_json")),
          headline=("f1",)),
    _spec("xnli", "classification", "accuracy",
          (FileLayout("XNLI", rf"{ANY_DIR}multinli\.train\.en\.tsv", "xglue_xnli", lang="en",
                      split="train"),
           FileLayout("XNLI", rf"{ANY_DIR}{LANG}\.(?P<split>dev|test)", "xglue_xnli")),
          readers.XNLI_LABELS),
    _spec("pawsx", "classification", "accuracy",
          (FileLayout("PAWSX", rf"{ANY_DIR}en/train\.tsv", "xglue_pawsx", lang="en",
                      split="train"),
           FileLayout("PAWSX", rf"{ANY_DIR}{LANG}/(?P<split>dev|test)_2k\.tsv", "xglue_pawsx")),
          readers.PAWSX_LABELS),
    _spec("qadsm", "classification", "accuracy",
          _dotted("QADSM", r"xglue\.qadsm\.", "xglue_qadsm"), readers.QADSM_LABELS),
    _spec("wpr", "classification", "ndcg", _dotted("WPR", r"xglue\.wpr\.", "xglue_wpr"),
          readers.WPR_LABELS),
    _spec("qam", "classification", "accuracy", _dotted("QAM", r"xglue\.qam\.", "xglue_qam"),
          readers.QAM_LABELS),
)}


def write_predictions(out_dir: str, spec: TaskSpec, lang: str, predictions) -> None:
  """`<out_dir>/<TASK>/<lang>.prediction` in the scorer's format."""
  metrics.write_predictions(out_dir, spec.name.upper(), lang, predictions)


BENCHMARK = Benchmark(
    name="xglue", title="XGLUE", tasks=TASKS, gin_file="eval/xglue.gin",
    categories={name: "XGLUE-Understanding" for name in TASKS}, average="tasks",
    write_predictions=write_predictions,
    score_note=("Scores: accuracy (NC, XNLI, PAWS-X, QADSM, QAM), entity F1 (NER), chunk "
                "precision (POS), F1 (MLQA), nDCG (WPR), as XGLUE's xglue_evaluate.py; "
                "percent. The overall score is the XGLUE-Understanding Score."))
