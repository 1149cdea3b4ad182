"""File readers on tiny fixtures (every format) and on the shared XTREME data."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from polyglot.errors import DataError
from polyglot.eval import readers, tasks
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME
from polyglot.eval.xtreme import tasks as xtreme

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xtreme"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")


def _write(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def test_pair_tsv_and_malformed_line(tmp_path):
  path = _write(tmp_path / "dev-de.tsv",
                "Ein Hund bellt.\tEin Tier macht Lärm.\tentailment\n"
                "Er schläft.\tEr rennt.\tcontradiction\n")
  ex = readers.read_pair_tsv(path, xtreme.XNLI_LABELS)
  assert [(e.text_a, e.label) for e in ex] == [("Ein Hund bellt.", "entailment"),
                                               ("Er schläft.", "contradiction")]
  assert ex[1].guid == f"{path}:2"
  bad = _write(tmp_path / "bad.tsv", "a\tb\tneutral\nonly two\tfields\n")
  with pytest.raises(DataError, match=r"bad\.tsv:2: expected 3 tab-separated"):
    readers.read_pair_tsv(bad)
  with pytest.raises(DataError, match=r"bad\.tsv:1: label 'neutral' is not one of"):
    readers.read_pair_tsv(bad, xtreme.PAWSX_LABELS)


def test_pawsx_placeholders_are_dropped(tmp_path):
  path = _write(tmp_path / "dev-de.tsv",
                "Satz eins.\tSatz zwei.\t1\nNS\tSatz.\t0\nSatz.\tNS\t0\n\tleer\t1\nA.\tB.\t0\n")
  kept = readers.read_pair_tsv(path, xtreme.PAWSX_LABELS, drop_placeholders=True)
  assert [e.text_a for e in kept] == ["Satz eins.", "A."]
  assert len(readers.read_pair_tsv(path, xtreme.PAWSX_LABELS)) == 5


def test_tag_text_tab_and_space_separated(tmp_path):
  tab = _write(tmp_path / "test-de.tsv",
               "Angela\tB-PER\nMerkel\tI-PER\nspricht\tO\n\n\nBerlin\tB-LOC\n")
  ex = readers.read_tag_text(tab)
  assert [(e.words, e.tags) for e in ex] == [
      (("Angela", "Merkel", "spricht"), ("B-PER", "I-PER", "O")), (("Berlin",), ("B-LOC",))]
  assert ex[1].guid == f"{tab}:6"
  # CoNLL-2003 style: space separated, -DOCSTART- skipped, last column is the tag.
  space = _write(tmp_path / "train.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n"
                                         "rejects VBZ B-VP O\n")
  assert [(e.words, e.tags) for e in readers.read_tag_text(space)] == [
      (("EU", "rejects"), ("B-ORG", "O"))]
  bad = _write(tmp_path / "bad.txt", "EU B-ORG\nrejects\n")
  with pytest.raises(DataError, match=r"bad\.txt:2: expected 'token<TAB>tag'"):
    readers.read_tag_text(bad)


_CONLLU = """\
# sent_id = 1
# text = Wir gehen zum Haus.
1\tWir\twir\tPRON\t_\t_\t2\tnsubj\t_\t_
2\tgehen\tgehen\tVERB\t_\t_\t0\troot\t_\t_
3-4\tzum\t_\t_\t_\t_\t_\t_\t_\t_
3\tzu\tzu\tADP\t_\t_\t5\tcase\t_\t_
4\tdem\tder\tDET\t_\t_\t5\tdet\t_\t_
5\tHaus\tHaus\tNOUN\t_\t_\t2\tobl\t_\t_
5.1\tgeht\tgehen\tVERB\t_\t_\t_\t_\t2:conj\t_
6\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_

1\tI\tI\tPRON\t_\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\t_\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\t_\t_\t0\troot\t_\t_

1\t_\t_\tNOUN\t_\t_\t0\troot\t_\t_
2\t_\t_\tVERB\t_\t_\t1\tdep\t_\t_
"""


def test_conllu_fused_forms_and_empty_nodes(tmp_path):
  path = _write(tmp_path / "de_gsd-ud-test.conllu", _CONLLU)
  ex = readers.read_conllu(path, "de")
  # "zum": zu and dem hang off Haus at the same depth; ADP outranks DET.
  # "don't": n't is the span's root, so the fused form takes PART.
  # Empty node 5.1 is skipped; the all-"_" sentence is dropped (as XTREME).
  assert [(e.words, e.tags) for e in ex] == [
      (("Wir", "gehen", "zum", "Haus", "."), ("PRON", "VERB", "ADP", "NOUN", "PUNCT")),
      (("I", "don't"), ("PRON", "PART"))]
  bad = _write(tmp_path / "bad.conllu", "1\tWir\twir\tPRON\n")
  with pytest.raises(DataError, match=r"bad\.conllu:1: expected 10 tab-separated"):
    readers.read_conllu(bad, "de")


def _squad(title="t", qas=None, context="Ada Lovelace wrote the first program in 1843."):
  qas = qas or [{"id": "q1", "question": "When?", "answers": [{"text": "1843",
                                                                 "answer_start": 40}]}]
  return {"version": "1.1", "data": [{"title": title,
                                      "paragraphs": [{"context": context, "qas": qas}]}]}


def test_squad_json(tmp_path):
  path = _write(tmp_path / "xquad.de.json", json.dumps(_squad()))
  (ex,) = readers.read_squad_json(path)
  assert ex.guid == "q1" and ex.answers == (readers.Answer("1843", 40),)
  assert ex.context[40:44] == "1843"
  broken = _write(tmp_path / "broken.json", '{"data": [\n  {"paragraphs": [}\n]}')
  with pytest.raises(DataError, match=r"broken\.json:2: invalid JSON"):
    readers.read_squad_json(broken)
  no_answers = _write(tmp_path / "no_answers.json", json.dumps(_squad(
      qas=[{"id": "q", "question": "?"}])))
  with pytest.raises(DataError, match="article 0 paragraph 0: not SQuAD"):
    readers.read_squad_json(no_answers)


def test_tatoeba_alignment_and_sorted_english(tmp_path):
  src = _write(tmp_path / "de-en.de", "Hallo.\nDanke.\n")
  en = _write(tmp_path / "de-en.en", "Hello.\nThanks.\n")
  assert readers.read_tatoeba(src, en) == readers.TatoebaSet(("Hallo.", "Danke."),
                                                             ("Hello.", "Thanks."))
  short = _write(tmp_path / "short.en", "Hello.\n")
  with pytest.raises(DataError, match="line-aligned"):
    readers.read_tatoeba(src, short)
  n = 25
  sorted_src = _write(tmp_path / "fr-en.fr", "".join(f"phrase {i}\n" for i in range(n)))
  sorted_en = _write(tmp_path / "fr-en.en", "".join(f"sentence {i:02d}\n" for i in range(n)))
  with pytest.raises(DataError, match="is sorted"):
    readers.read_tatoeba(sorted_src, sorted_en)


def test_bucc_sentences_and_gold(tmp_path):
  zh = _write(tmp_path / "zh-en.dev.zh", "zh-000001\t猫坐着。\nzh-000002\t狗跑。\n")
  en = _write(tmp_path / "zh-en.dev.en", "en-000001\tThe dog runs.\nen-000002\tA cat sits.\n")
  gold = _write(tmp_path / "zh-en.dev.gold", "zh-000001\ten-000002\nzh-000002\ten-000001\n")
  out = readers.read_bucc(zh, en, gold)
  assert out.source == ("猫坐着。", "狗跑。")
  assert out.english_ids == ("en-000001", "en-000002")
  assert out.gold == {("zh-000001", "en-000002"), ("zh-000002", "en-000001")}
  bad_gold = _write(tmp_path / "bad.gold", "zh-000001\ten-999999\n")
  with pytest.raises(DataError, match=r"bad\.gold:1: pair \(zh-000001, en-999999\)"):
    readers.read_bucc(zh, en, bad_gold)
  bad_zh = _write(tmp_path / "bad.zh", "zh-000001 no tab\n")
  with pytest.raises(DataError, match=r"bad\.zh:1: expected 'id<TAB>sentence'"):
    readers.read_bucc(bad_zh, en, gold)


def test_load_concatenates_treebanks_of_one_language(tmp_path):
  _write(tmp_path / "udpos" / "de_gsd-ud-test.conllu", _CONLLU)
  _write(tmp_path / "udpos" / "de_hdt-ud-test.conllu",
         "1\tJa\tja\tINTJ\t_\t_\t0\troot\t_\t_\n\n")
  data = tasks.discover(XTREME.task("udpos"), tmp_path)
  ex = readers.load(data, "de", "test")
  assert [e.words for e in ex] == [("Wir", "gehen", "zum", "Haus", "."), ("I", "don't"),
                                   ("Ja",)]


def test_file_readers_import_no_tensorflow(tmp_path):
  _write(tmp_path / "xnli" / "dev-de.tsv", "a\tb\tneutral\n")
  code = ("import sys\n"
          "from polyglot.eval import features, hparams, metrics, readers, report, "
          "retrieval, tasks\n"
          "from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME\n"
          f"data = tasks.discover(XTREME.task('xnli'), {str(tmp_path)!r})\n"
          "assert len(readers.load(data, 'de', 'dev')) == 1\n"
          "heavy = {'tensorflow', 'jax', 'matplotlib', 'gin'} & set(sys.modules)\n"
          "assert not heavy, heavy\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ---- the shared XTREME data (counts from its README) ----

def _load(task, lang, split):
  return readers.load(tasks.discover(XTREME.task(task), SHARED), lang, split)


@needs_shared
@pytest.mark.parametrize("lang", ["en", "ar", "bg", "de", "es", "ru", "sw", "zh"])
def test_shared_xnli_has_2490_pairs_830_per_label(lang):
  ex = _load("xnli", lang, "dev")
  assert len(ex) == 2490
  assert {label: sum(e.label == label for e in ex) for label in xtreme.XNLI_LABELS} == {
      label: 830 for label in xtreme.XNLI_LABELS}


@needs_shared
def test_shared_pawsx_filters_placeholders():
  # 2000 rows each; NS/empty translations: de 68, es 38, zh 16.
  assert {lang: len(_load("pawsx", lang, "dev")) for lang in ("en", "de", "es", "zh")} == {
      "en": 2000, "de": 1932, "es": 1962, "zh": 1984}


@needs_shared
def test_shared_qa_counts():
  assert {lang: len(_load("xquad", lang, "test")) for lang in ("en", "ar", "de", "es", "ru",
                                                               "zh")} == dict.fromkeys(
      ("en", "ar", "de", "es", "ru", "zh"), 1190)
  assert {lang: len(_load("mlqa", lang, "dev")) for lang in ("en", "de", "es", "zh")} == {
      "en": 1148, "de": 512, "es": 500, "zh": 504}
  assert {lang: len(_load("tydiqa", lang, "dev")) for lang in ("en", "bn", "fi", "ko", "ru")} == {
      "en": 440, "bn": 113, "fi": 782, "ko": 276, "ru": 812}
  assert len(_load("tydiqa", "en", "train")) == 3696
  for ex in _load("xquad", "de", "test"):
    for a in ex.answers:
      assert ex.context[a.start:a.start + len(a.text)] == a.text


@needs_shared
def test_shared_udpos_and_ner_counts():
  assert len(_load("udpos", "en", "train")) == 2412
  assert {lang: len(_load("udpos", lang, "test")) for lang in ("en", "de", "zh", "fi", "ru",
                                                               "ar")} == {
      "en": 2077, "de": 977, "zh": 500, "fi": 1555, "ru": 601, "ar": 1000}
  train = _load("panx", "en", "train")
  assert len(train) == 14042 and sum(len(e.words) for e in train) == 203621
  assert {t for e in train for t in e.tags} == set(xtreme.PANX_LABELS)
  hau = _load("panx", "hau", "test")
  assert len(hau) == 1633 and "B-DATE" in {t for e in hau for t in e.tags}


@needs_shared
def test_shared_retrieval_counts():
  de = _load("tatoeba", "de", "test")
  assert len(de.source) == len(de.english) == 1000
  # LASER codes become XTREME's (swh -> sw); others stay as they are (ast).
  assert len(_load("tatoeba", "sw", "test").source) == 390
  assert len(_load("tatoeba", "ast", "test").source) == 127
  bucc = _load("bucc2018", "zh", "dev")
  assert (len(bucc.source), len(bucc.english), len(bucc.gold)) == (8624, 13589, 257)
