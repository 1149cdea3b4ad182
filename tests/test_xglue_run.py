"""`python -m polyglot.eval --benchmark=xglue` end to end on files in XGLUE's released layout.

A tiny random checkpoint (tests/test_xtreme_run.py's) fine-tunes each of the
nine understanding tasks for a few steps on English fixture files and predicts
German; the prediction files it writes are then scored by XGLUE's own scorer
(`evaluation/xglue_evaluate.py`, copied in tests/test_xglue_metrics.py), which
must give the report's numbers. File names and line formats are XGLUE's
`Data_Format.txt` (see polyglot/eval/xglue/readers.py).
"""
import json
import os
import pathlib
import subprocess
import sys
import types
import warnings

import pytest

import test_xglue_metrics as official
from polyglot.eval.xglue import metrics
from test_xtreme_run import DE, EN, REPO, save_tiny_checkpoint, train_spm

TASKS = ("ner", "pos", "nc", "mlqa", "xnli", "pawsx", "qadsm", "wpr", "qam")


def _write(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


def _tagged(sentences, tag) -> str:
  return "".join("".join(f"{w} {tag(i, w)}\n" for i, w in enumerate(s.rstrip(".").split()))
                 + "\n" for s in sentences)


def _ner(i, w):
  return "B-PER" if i == 0 and w[0].isupper() else "B-LOC" if w in (
      "London", "Paris", "Berlin", "München") else "O"


def _pos(i, w):
  return "PROPN" if w[0].isupper() else "NUM" if w.isdigit() else "NOUN" if i % 2 else "DET"


def _rows(sentences, other, labels, n, fields=2) -> list[str]:
  """n tab-separated rows: `fields` texts from the two lists, then a label."""
  return ["\t".join([sentences[i % len(sentences)], other[(i * 3) % len(other)],
                     *[other[(i + 1) % len(other)]] * (fields - 2), labels[i % len(labels)]])
          for i in range(n)]


def _squad(contexts) -> str:
  paragraphs = [{"context": c, "qas": [{"id": f"q{k}", "question": f"Who is in: {c[:20]}?",
                                        "answers": [{"text": c.split()[0],
                                                     "answer_start": 0}]}]}
                for k, c in enumerate(contexts)]
  return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]},
                    ensure_ascii=False)


def write_xglue(root: pathlib.Path) -> None:
  """The nine tasks: English train and dev, German test, in `xglue_full_dataset`'s names."""
  sets = {"en.train": (EN, EN[::-1], 12), "en.dev": (EN[::-1], EN, 6), "de.test": (DE, DE[::-1], 8)}
  for name, (a, b, n) in sets.items():
    lang, split = name.split(".")
    _write(root / f"NER/{name}", _tagged(a, _ner))
    _write(root / f"POS/{name}", _tagged(a, _pos))
    nc = ("sports", "news", "finance")
    _write(root / f"NC/xglue.nc.{name}", "\n".join(_rows(a, b, nc, n)) + "\n")
    _write(root / f"QADSM/xglue.qadsm.{name}", "\n".join(_rows(a, b, ("Good", "Bad"), n, 3)) + "\n")
    _write(root / f"QAM/xglue.qam.{name}", "\n".join(_rows(a, b, ("1", "0"), n)) + "\n")
    queries = [a[i // 3] for i in range(n)]  # runs of three documents per query
    _write(root / f"WPR/xglue.wpr.{name}",
           "\n".join(_rows(queries, b, ("4", "0", "2", "1"), n, 3)) + "\n")
    pairs = _rows(a, b, ("neutral", "entailment", "contradiction"), n)
    if split == "train":  # XNLI-MT: a header and "contradictory"
      _write(root / "XNLI/multinli.train.en.tsv", "premise\thypo\tlabel\n" + "\n".join(
          pairs).replace("contradiction", "contradictory") + "\n")
    else:
      _write(root / f"XNLI/{name}", "\n".join(pairs) + "\n")
    paws = [f"{i}\t{row}" for i, row in enumerate(_rows(a, b, ("0", "1"), n), 1)]
    folder = "en/train.tsv" if split == "train" else f"{lang}/{split}_2k.tsv"
    _write(root / f"PAWSX/{folder}", "id\tsentence1\tsentence2\tlabel\n" + "\n".join(paws) + "\n")
    mlqa = ("squad1.1/train-v1.1.json" if split == "train"
            else f"MLQA_V1/{split}/{split}-context-{lang}-question-{lang}.json")
    _write(root / f"MLQA/{mlqa}", _squad(a))


def smoke_gin(path: pathlib.Path) -> str:
  lines = [f"{t}/TaskHparams.{k} = {v}" for t in TASKS for k, v in (
      ("max_steps", 2), ("max_seq_length", 64), ("batch_size", 4), ("eval_every_steps", 2),
      ("learning_rate", 1e-3))]
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def xglue_run(tmp_path_factory):
  """The command as a user types it, once; (its process, the data root, the output dir)."""
  root = tmp_path_factory.mktemp("xglue")
  data = root / "xglue_full_dataset"
  write_xglue(data)
  save_tiny_checkpoint(root / "ckpt", train_spm((EN + DE) * 20, 300))
  out = root / "out"
  cmd = [sys.executable, "-m", "polyglot.eval", "--benchmark=xglue",
         f"--checkpoint_dir={root / 'ckpt'}", f"--data_dir={data}", f"--output_dir={out}",
         f"--gin_file={smoke_gin(root / 'smoke.gin')}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  return proc, data, out


def test_every_task_is_scored_and_averaged_as_xglue(xglue_run):
  proc, _, out = xglue_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().splitlines()[-1] == f"done: {out / 'results.md'}"
  report = json.loads((out / "results.json").read_text(encoding="utf-8"))
  assert list(report["tasks"]) == list(TASKS)
  for task, entry in report["tasks"].items():
    assert entry["seconds"] > 0 and set(entry["languages"]) == {"en", "de"}, task
    assert entry["languages"]["en"]["split"] == "dev" and entry["languages"]["de"]["split"] == "test"
  headline = {"pos": "precision", "mlqa": "f1", "ner": "f1", "wpr": "ndcg"}
  for task, entry in report["tasks"].items():
    for m in entry["languages"].values():
      assert m["score"] == m[headline.get(task, "accuracy")], task
  averages = [entry["average"] for entry in report["tasks"].values()]
  assert report["categories"] == {"XGLUE-Understanding": pytest.approx(sum(averages) / 9)}
  assert report["overall"] == pytest.approx(sum(averages) / 9)
  md = (out / "results.md").read_text(encoding="utf-8")
  assert md.startswith("# XGLUE results") and "XGLUE-Understanding Score" in md
  assert "Wall time per task (fine-tuning and prediction): ner " in md


def test_prediction_files_score_as_the_official_scorer_says(xglue_run, monkeypatch):
  """Our German test predictions, scored by xglue_evaluate.py, give the report's scores."""
  proc, data, out = xglue_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / "results.json").read_text(encoding="utf-8"))
  for split, lang in (("test", "de"), ("dev", "en")):
    monkeypatch.setattr(official, "args", types.SimpleNamespace(
        ground_truth_dir=str(data), prediction_dir=str(out / "predictions" / split), split=split))
    monkeypatch.setattr(official, "task2lg", {t: lang for t in metrics.UNDERSTANDING_TASKS})
    for task in metrics.UNDERSTANDING_TASKS:
      assert (out / "predictions" / split / task / f"{lang}.prediction").is_file()
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval: "NOUN seems not to be NE tag"
        theirs = official.get_score_by_task(task)[lang]
      ours = report["tasks"][task.lower()]["languages"][lang]["score"]
      assert ours == pytest.approx(100 * theirs, rel=1e-12, abs=1e-12), (task, lang)
