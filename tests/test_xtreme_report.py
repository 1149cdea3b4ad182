"""results.json / results.md / results.png and the XTREME-style averages."""
import json
import pathlib

import pytest

from polyglot.errors import DataError
from polyglot.eval import report
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME

SCORES = {
    "xnli": {"en": {"accuracy": 80.0}, "de": {"accuracy": 70.0}},
    "pawsx": {"de": {"accuracy": 90.0}},
    "panx": {"en": {"f1": 60.0, "precision": 50.0, "recall": 75.0}, "hau": {"f1": 40.0}},
    "xquad": {"de": {"exact_match": 50.0, "f1": 70.0}},
    "tatoeba": {"de": {"accuracy": 30.0}},
    "bucc2018": {"zh": {"f1": 50.0, "precision": 40.0, "recall": 66.7, "threshold": 1.1}},
}


def test_headline_scores_follow_xtreme_evaluate():
  assert report.headline(XTREME.task("xquad"), {"exact_match": 50.0, "f1": 70.0}) == 60.0
  assert report.headline(XTREME.task("udpos"), {"f1": 91.0, "precision": 1.0}) == 91.0
  assert report.headline(XTREME.task("tatoeba"), {"accuracy": 42.0}) == 42.0
  with pytest.raises(DataError, match=r"mlqa scores need \('exact_match', 'f1'\)"):
    report.headline(XTREME.task("mlqa"), {"f1": 1.0})


def test_summary_averages_tasks_then_categories():
  s = report.summarize(XTREME, SCORES, splits={"xnli": {"de": "dev", "en": "dev"}})
  assert s["tasks"]["xnli"]["average"] == 75.0
  assert s["tasks"]["xnli"]["languages"]["de"]["split"] == "dev"
  # classification (75 + 90) / 2, structured 50, QA 60, retrieval (30 + 50) / 2.
  assert s["categories"] == {"Sentence classification": 82.5, "Structured prediction": 50.0,
                             "Question answering": 60.0, "Sentence retrieval": 40.0}
  assert s["overall"] == pytest.approx((82.5 + 50 + 60 + 40) / 4)


def test_write_report_files(tmp_path):
  meta = {"checkpoint": "/ckpt", "step": 1000}
  files = {k: pathlib.Path(v) for k, v in report.write_report(
      tmp_path / "out", XTREME, SCORES, meta, splits={"xnli": {"de": "dev", "en": "dev"}}).items()}
  assert files == {k: tmp_path / "out" / f"results.{k}" for k in ("json", "md", "png")}
  data = json.loads(files["json"].read_text(encoding="utf-8"))
  assert data["run"] == meta and data["tasks"]["panx"]["languages"]["hau"]["score"] == 40.0
  md = files["md"].read_text(encoding="utf-8")
  assert "| language | xnli | pawsx | panx | xquad | tatoeba | bucc2018 |" in md
  assert "| de | 70.0† | 90.0 |  | 60.0 | 30.0 |  |" in md
  assert "| **average** | **75.0** | **90.0** | **50.0** | **60.0** | **30.0** | **50.0** |" in md
  assert "| **overall** | **58.1** |" in md
  png = files["png"].read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_progress_counts_items(capsys):
  assert list(report.progress(range(3), total=3, desc="predict")) == [0, 1, 2]
  assert "predict" in capsys.readouterr().err
