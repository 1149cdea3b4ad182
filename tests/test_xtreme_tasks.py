"""The task registry and data discovery in both on-disk layouts."""
from pathlib import Path

import pytest

from polyglot.errors import ConfigError, DataError
from polyglot.eval import readers, tasks
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xtreme"
ALL = "xnli,pawsx,udpos,panx,xquad,mlqa,tydiqa,bucc2018,tatoeba"


def _touch(root: Path, *relpaths: str) -> None:
  for rel in relpaths:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("", encoding="utf-8")


def test_registry_has_the_nine_tasks_and_xtreme_categories():
  assert [s.name for s in XTREME.parse_tasks(ALL)] == ALL.split(",")
  types = {name: spec.task_type for name, spec in XTREME.tasks.items()}
  assert types == {"xnli": "classification", "pawsx": "classification", "udpos": "tagging",
                   "panx": "tagging", "xquad": "qa", "mlqa": "qa", "tydiqa": "qa",
                   "bucc2018": "retrieval", "tatoeba": "retrieval"}
  assert not XTREME.task("tatoeba").fine_tuned and XTREME.task("xnli").fine_tuned


def test_unknown_task_lists_the_known_ones():
  with pytest.raises(ConfigError, match=r"unknown XTREME task 'xnlli'; known: xnli, pawsx, udpos"):
    XTREME.parse_tasks("xnli,xnlli")
  with pytest.raises(ConfigError, match="no task given"):
    XTREME.parse_tasks(" , ")


def test_layout_needs_language_and_split():
  with pytest.raises(ConfigError, match="give the language"):
    tasks.FileLayout("x", r"(?P<split>dev)\.tsv", "pair_tsv")
  with pytest.raises(ConfigError, match="give the split"):
    tasks.FileLayout("x", r"(?P<lang>[a-z]+)\.tsv", "pair_tsv")
  with pytest.raises(ConfigError, match="give the language"):
    tasks.FileLayout("x", r"(?P<lang>[a-z]+)\.tsv", "pair_tsv", split="test", lang="en")


def test_xtreme_download_layout(tmp_path):
  _touch(tmp_path, "xnli/train-en.tsv", "xnli/dev-en.tsv", "xnli/test-de.tsv",
         "panx/train-en.tsv", "panx/test-sw.tsv",
         "udpos/dev-en.tsv", "udpos/test-yo.tsv",
         "squad/train-v1.1.json", "squad/dev-v1.1.json",
         "xquad/xquad.el.json",
         "mlqa/MLQA_V1/dev/dev-context-vi-question-vi.json",
         "mlqa/MLQA_V1/test/test-context-vi-question-vi.json",
         "mlqa/MLQA_V1/test/test-context-vi-question-en.json",  # cross-lingual: not XTREME's
         "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.en.train.json",
         "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.te.dev.json",
         "bucc2018/fr-en.dev.fr", "bucc2018/fr-en.dev.en", "bucc2018/fr-en.dev.gold",
         "bucc2018/fr-en.test.fr", "bucc2018/fr-en.test.en",  # test gold withheld
         "tatoeba/ka-en.ka", "tatoeba/ka-en.en")

  def found(name):
    return sorted(tasks.discover(XTREME.task(name), tmp_path).sources)

  assert found("xnli") == [("de", "test"), ("en", "dev"), ("en", "train")]
  assert found("panx") == [("en", "train"), ("sw", "test")]
  assert found("udpos") == [("en", "dev"), ("yo", "test")]
  assert found("xquad") == [("el", "test"), ("en", "train")]
  assert found("mlqa") == [("en", "train"), ("vi", "dev"), ("vi", "test")]
  assert found("tydiqa") == [("en", "train"), ("te", "dev")]
  assert found("tatoeba") == [("ka", "test")]
  bucc = tasks.discover(XTREME.task("bucc2018"), tmp_path)
  assert sorted(bucc.sources) == [("fr", "dev")]
  src = bucc.source("fr", "dev")
  assert [p.name for p in src.files[0].partners] == ["fr-en.dev.en", "fr-en.dev.gold"]
  (m,) = tasks.missing(bucc, ["fr"])
  assert m.what == "files" and "fr-en.test.gold" in m.detail


def test_shared_data_layout_names(tmp_path):
  _touch(tmp_path, "udpos/en_ewt-ud-train.conllu", "udpos/en_ewt-ud-train.SOURCE_DOCS.txt",
         "udpos/fi_tdt-ud-test.conllu",
         "ner/conll2003_en/train.txt", "ner/conll2003_en/dev.txt",
         "ner/masakhaner2/hau.test.txt",
         "tatoeba/tatoeba.deu-eng.deu", "tatoeba/tatoeba.deu-eng.eng",
         "tatoeba/tatoeba.ast-eng.ast", "tatoeba/tatoeba.ast-eng.eng",
         "mlqa/dev-context-de-question-de.json",
         "tydiqa/tydiqa.goldp.fi.dev.json", "tydiqa/tydiqa.goldp.en.train.json",
         "bucc2018/zh-en.dev.zh", "bucc2018/zh-en.dev.en", "bucc2018/zh-en.dev.gold")
  data = {n: tasks.discover(XTREME.task(n), tmp_path) for n in XTREME.tasks}
  assert sorted(data["udpos"].sources) == [("en", "train"), ("fi", "test")]
  assert sorted(data["panx"].sources) == [("en", "dev"), ("en", "train"), ("hau", "test")]
  # LASER's ISO 639-3 names map to XTREME's codes where XTREME has them.
  assert sorted(data["tatoeba"].sources) == [("ast", "test"), ("de", "test")]
  assert data["tatoeba"].source("de", "test").files[0].partners[0].name == "tatoeba.deu-eng.eng"
  assert sorted(data["mlqa"].sources) == [("de", "dev")]
  assert sorted(data["tydiqa"].sources) == [("en", "train"), ("fi", "dev")]
  assert data["tydiqa"].eval_split("fi") == "dev"
  assert sorted(data["bucc2018"].sources) == [("zh", "dev")]
  assert data["xnli"].sources == {}


def test_same_split_in_two_layouts_is_an_error(tmp_path):
  _touch(tmp_path, "udpos/test-de.tsv", "udpos/de_gsd-ud-test.conllu")
  with pytest.raises(DataError, match=r"udpos de/test is in two layouts"):
    tasks.discover(XTREME.task("udpos"), tmp_path)


def test_missing_reports_task_train_and_languages(tmp_path):
  _touch(tmp_path, "xnli/dev-en.tsv", "xnli/dev-de.tsv")
  xnli = tasks.discover(XTREME.task("xnli"), tmp_path)
  report = {m.what: m for m in tasks.missing(xnli, ["de", "fr", "sw"])}
  assert set(report) == {"train", "eval"}
  assert report["eval"].languages == ("fr", "sw")
  assert "xnli: eval missing (fr, sw)" in str(report["eval"])
  (absent,) = tasks.missing(tasks.discover(XTREME.task("tatoeba"), tmp_path))
  assert absent.what == "task" and "tatoeba" in absent.detail
  with pytest.raises(DataError, match=r"no test data for language 'de'.*found: de/dev, en/dev"):
    xnli.source("de", "test")


def test_discover_needs_exactly_one_source(tmp_path):
  spec = XTREME.task("xnli")
  with pytest.raises(ConfigError, match="exactly one"):
    tasks.discover(spec)
  with pytest.raises(ConfigError, match="exactly one"):
    tasks.discover(spec, tmp_path, tfds_data_dir=tmp_path)
  with pytest.raises(DataError, match="does not exist"):
    tasks.discover(spec, tmp_path / "nope")


def test_tfds_sources_cover_xtreme_languages(tmp_path):
  data = tasks.discover(XTREME.task("panx"), tfds_data_dir=tmp_path)
  assert data.languages("test") == tuple(sorted(XTREME.task("panx").languages))
  assert data.languages("train") == ("en",)
  tydi = tasks.discover(XTREME.task("tydiqa"), tfds_data_dir=tmp_path)
  train, dev = tydi.source("en", "train"), tydi.source("fi", "dev")
  assert (train.builder, train.split, train.id_prefix) == ("tydi_qa/goldp", "train", "english-")
  assert (dev.builder, dev.split) == ("tydi_qa/goldp", "validation-fi")
  assert tasks.missing(tydi, ["fi", "xx"])[0].languages == ("xx",)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")
def test_shared_data_discovery_and_what_is_missing():
  found = {n: tasks.discover(XTREME.task(n), SHARED) for n in XTREME.tasks}
  assert found["xnli"].languages("dev") == ("ar", "bg", "de", "en", "es", "ru", "sw", "zh")
  assert found["udpos"].languages("test") == ("ar", "de", "en", "fi", "ru", "zh")
  assert len(found["tatoeba"].languages()) == 56
  assert found["panx"].languages("test") == (
      "bam", "en", "hau", "ibo", "kin", "lug", "pcm", "swa", "wol", "xho", "yor")
  missing = {(m.task, m.what) for n in XTREME.tasks for m in tasks.missing(found[n])}
  # No English training data for XNLI/PAWS-X (dev only) nor SQuAD for XQuAD/MLQA.
  assert {t for t, what in missing if what == "train"} == {"xnli", "pawsx", "xquad", "mlqa"}
  assert not any(what in ("task", "files") for _, what in missing)
  assert isinstance(readers.load(found["tatoeba"], "de", "test"), readers.TatoebaSet)
