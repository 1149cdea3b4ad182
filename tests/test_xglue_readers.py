"""XGLUE readers on fixtures in the released formats, and on bad files.

Formats: microsoft/XGLUE `Data_Format.txt` ("XGLUE train/dev/test file format").
The rows are data instances of the Hugging Face `xglue` dataset card, written
back in those formats.
"""
import json

import pytest

from polyglot.errors import DataError
from polyglot.eval.xglue import readers
from polyglot.eval.readers import read_squad_json

NC_ROW = ("Cocina para lerdos: las leyes del bizcocho\tEl bizcocho es seguramente el producto "
          "más básico y sencillo de toda la repostería.\tfoodanddrink")
QADSM_ROW = ("cruise portland maine\tNew England Cruises\tYour New England Cruise Awaits! "
             "Holland America Line Official Site.\tGood")
WPR_ROW = "maxpro官网\tvivo智能手机官方网站-AI非凡摄影X23\t在线购买，售后服务。\t0"
QAM_ROW = ("main character of malazan book of the fallen\tErikson has stated that after the last "
           "novel of the Malazan Book of the Fallen was finished, he and Esslemont would write a "
           "comprehensive guide.\t0")
XNLI_ROW = "และเขาพูดว่า, ม่าม๊า ผมอยู่บ้าน\tเขาโทรหาเเม่ของเขาอย่างรวดเร็ว\tneutral"
PAWSX_HEADER = "id\tsentence1\tsentence2\tlabel\n"
PAWSX_ROW = ("1\tLa excepción fue entre fines de 2005 y 2009 cuando jugó en Suecia.\tLa excepción "
             "se dio entre fines del 2005 y 2009, cuando jugó con Suecia.\t1")
NER_SENTENCE = "Dat O\nis O\nin O\nItalië B-LOC\n, O\n'Der B-PER\nKaiser' I-PER\n"
POS_SENTENCE = "Je PRON\nsens VERB\nqu' SCONJ\nentre ADP\nça PRON\n. PUNCT\n"


def _write(tmp_path, name: str, text: str):
  path = tmp_path / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _raises_one_line(match: str, read, *args):
  with pytest.raises(DataError, match=match) as e:
    read(*args)
  assert "\n" not in str(e.value)


def test_nc_labelled_and_unlabelled(tmp_path):
  dev = _write(tmp_path, "xglue.nc.es.dev", f"{NC_ROW}\n{NC_ROW.replace('foodanddrink', 'news')}\n")
  ex = readers.read_nc(dev)
  assert [(e.text_a, e.label) for e in ex] == [
      ("Cocina para lerdos: las leyes del bizcocho", "foodanddrink"),
      ("Cocina para lerdos: las leyes del bizcocho", "news")]
  assert ex[0].text_b.startswith("El bizcocho es seguramente")
  assert ex[1].guid == f"{dev}:2"
  # Data_Format.txt: the test files have no label column.
  test = _write(tmp_path, "xglue.nc.es.test", NC_ROW.rsplit("\t", 1)[0] + "\n")
  assert [e.label for e in readers.read_nc(test)] == [None]


def test_qadsm_joins_title_and_description(tmp_path):
  ex = readers.read_qadsm(_write(tmp_path, "xglue.qadsm.en.train", QADSM_ROW + "\r\n"))
  assert (ex[0].text_a, ex[0].text_b, ex[0].label) == (
      "cruise portland maine",
      "New England Cruises Your New England Cruise Awaits! Holland America Line Official Site.",
      "Good")


def test_qam(tmp_path):
  ex = readers.read_qam(_write(tmp_path, "xglue.qam.en.dev", QAM_ROW + "\n"))
  assert (ex[0].text_a, ex[0].label) == ("main character of malazan book of the fallen", "0")


def test_wpr_queries_are_runs_of_adjacent_lines(tmp_path):
  rows = ["maxpro官网\tt1\ts1\t0", "maxpro官网\tt2\ts2\t3", "météo\tt3\ts3\t4",
          "maxpro官网\tt4\ts4\t1", "\tt5\ts5\t2", "python\tt6\ts6\t0"]
  ex = readers.read_wpr(_write(tmp_path, "xglue.wpr.zh.dev", "\n".join(rows) + "\n"))
  # A repeated query after another one starts a new group; a line after an
  # empty query stays in its group (the scorer's `load_data`).
  assert [e.query_id for e in ex] == [0, 0, 1, 2, 3, 3]
  assert (ex[0].text_a, ex[0].text_b, ex[0].label) == ("maxpro官网", "t1 s1", "0")
  test = readers.read_wpr(_write(tmp_path, "xglue.wpr.zh.test", WPR_ROW.rsplit("\t", 1)[0]))
  assert (test[0].text_b, test[0].label) == ("vivo智能手机官方网站-AI非凡摄影X23 在线购买，售后服务。",
                                             None)


def test_xnli_train_header_and_dev(tmp_path):
  train = _write(tmp_path, "multinli.train.en.tsv",
                 "premise\thypo\tlabel\nA man sleeps.\tA man is awake.\tcontradictory\n")
  ex = readers.read_xnli(train)
  assert [(e.text_a, e.label, e.guid) for e in ex] == [
      ("A man sleeps.", "contradiction", f"{train}:2")]
  dev = readers.read_xnli(_write(tmp_path, "th.dev", XNLI_ROW + "\n"))
  assert (dev[0].text_b, dev[0].label) == ("เขาโทรหาเเม่ของเขาอย่างรวดเร็ว", "neutral")


def test_pawsx_keeps_placeholders_and_skips_blank_lines(tmp_path):
  path = _write(tmp_path, "es/test_2k.tsv",
                PAWSX_HEADER + PAWSX_ROW + "\n\n2\tNS\tUna frase.\t0\n")
  ex = readers.read_pawsx(path)
  assert [(e.text_a[:13], e.label, e.guid) for e in ex] == [
      ("La excepción ", "1", f"{path}:2"), ("NS", "0", f"{path}:4")]


def test_tagged_ner_and_pos(tmp_path):
  ner = _write(tmp_path, "nl.test", "-DOCSTART- O\n\n" + NER_SENTENCE + "\nwel O\n")
  ex = readers.read_tagged(ner, readers.NER_LABELS)
  assert [len(e.words) for e in ex] == [7, 1]
  assert ex[0].words[3:7] == ("Italië", ",", "'Der", "Kaiser'")
  assert ex[0].tags[3:7] == ("B-LOC", "O", "B-PER", "I-PER")
  pos = readers.read_tagged(_write(tmp_path, "fr.test", POS_SENTENCE), readers.POS_LABELS)
  assert pos[0].tags == ("PRON", "VERB", "SCONJ", "ADP", "PRON", "PUNCT")


def test_mlqa_files_are_squad_json(tmp_path):
  data = {"version": "1.0", "data": [{"title": "t", "paragraphs": [{"context": "Erikson wrote.",
          "qas": [{"id": "q1", "question": "Who?", "answers": [
              {"text": "Erikson", "answer_start": 0}]}]}]}]}
  path = _write(tmp_path, "MLQA_V1/dev/dev-context-hi-question-hi.json", json.dumps(data))
  assert [(e.guid, e.answers[0].text) for e in read_squad_json(path)] == [("q1", "Erikson")]


_TABLES = [
    (readers.read_nc, NC_ROW, 3),
    (readers.read_qam, QAM_ROW, 3),
    (readers.read_qadsm, QADSM_ROW, 4),
    (readers.read_wpr, WPR_ROW, 4),
]


@pytest.mark.parametrize("read,row,width", _TABLES)
def test_bad_tab_separated_files(tmp_path, read, row, width):
  texts, label = row.rsplit("\t", 1)
  bad = {
      "short.txt": "only one field\n",
      "unlabelled_later.txt": f"{row}\n{texts}\n",
      "label.txt": f"{texts}\tmaybe\n",
      "blank.txt": f"{row}\n\n{row}\n",
      "empty.txt": "",
  }
  p = {name: _write(tmp_path, name, text) for name, text in bad.items()}
  _raises_one_line(rf"short\.txt:1: expected {width} tab-separated fields \(.+\), or "
                   rf"{width - 1} in an unlabelled test file, found 1", read, p["short.txt"])
  _raises_one_line(rf"unlabelled_later\.txt:2: {width - 1} tab-separated fields, but line 1 has "
                   rf"{width}; every line needs the same columns", read, p["unlabelled_later.txt"])
  _raises_one_line(r"label\.txt:1: label 'maybe' is not one of \(", read, p["label.txt"])
  _raises_one_line(rf"blank\.txt:2: expected {width} tab-separated fields .+, found 1", read,
                   p["blank.txt"])
  _raises_one_line(r"empty\.txt: no examples; expected lines of", read, p["empty.txt"])
  assert read(_write(tmp_path, "ok.txt", f"{row}\n"))[0].label == label


def test_bad_xnli_files(tmp_path):
  _raises_one_line(r"a\.dev:2: expected 3 tab-separated fields \(premise, hypothesis, label\), "
                   "found 2", readers.read_xnli, _write(tmp_path, "a.dev", f"{XNLI_ROW}\nx\ty\n"))
  _raises_one_line(r"b\.dev:1: label 'entails' is not one of", readers.read_xnli,
                   _write(tmp_path, "b.dev", "x\ty\tentails\n"))
  _raises_one_line(r"c\.tsv: no examples", readers.read_xnli,
                   _write(tmp_path, "c.tsv", "premise\thypo\tlabel\n"))


def test_bad_pawsx_files(tmp_path):
  _raises_one_line(r"a\.tsv:1: expected the PAWS-X header 'id\\tsentence1", readers.read_pawsx,
                   _write(tmp_path, "a.tsv", PAWSX_ROW + "\n"))
  _raises_one_line(r"b\.tsv:1: expected the PAWS-X header", readers.read_pawsx,
                   _write(tmp_path, "b.tsv", ""))
  _raises_one_line(r"c\.tsv:3: expected 4 tab-separated fields \(id, sentence1, sentence2, "
                   r"label\), found 3", readers.read_pawsx,
                   _write(tmp_path, "c.tsv", f"{PAWSX_HEADER}{PAWSX_ROW}\n1\tx\ty\n"))
  _raises_one_line(r"d\.tsv:2: label '2' is not one of \('0', '1'\)", readers.read_pawsx,
                   _write(tmp_path, "d.tsv", f"{PAWSX_HEADER}1\tx\ty\t2\n"))
  _raises_one_line(r"e\.tsv: no examples; expected rows after the header", readers.read_pawsx,
                   _write(tmp_path, "e.tsv", PAWSX_HEADER + "\n"))


def test_bad_tagged_files(tmp_path):
  _raises_one_line(r"a\.dev:3: label 'B-DATE' is not one of", readers.read_tagged,
                   _write(tmp_path, "a.dev", "Dat O\n\n2020 B-DATE\n"), readers.NER_LABELS)
  _raises_one_line(r"b\.dev:2: expected 'token<TAB>tag' or 'token TAG'", readers.read_tagged,
                   _write(tmp_path, "b.dev", "Je PRON\nsens\n"), readers.POS_LABELS)
  _raises_one_line(r"c\.dev: no examples; expected 'word label' lines", readers.read_tagged,
                   _write(tmp_path, "c.dev", "-DOCSTART- O\n\n"), readers.POS_LABELS)


def test_not_utf8(tmp_path):
  path = tmp_path / "xglue.qam.fr.dev"
  path.write_bytes(QAM_ROW.encode() + b"\nqu\xe9\tr\xe9ponse\t1\n")
  _raises_one_line(r"xglue\.qam\.fr\.dev:2: not UTF-8", readers.read_qam, path)
