"""XTREME-R readers (XCOPA, SIQA, LAReQA, Mewsli-X) on fixtures in the released formats."""
import json
from pathlib import Path

import pytest

from polyglot.errors import DataError
from polyglot.eval.xtreme_r import readers
from polyglot.eval.readers import ChoiceExample
from polyglot.eval.xtreme_r.readers import Candidate, Query


def _write(path: Path, text: str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _jsonl(path: Path, records) -> Path:
  return _write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ---- XCOPA, COPA, SIQA ----

# The first lines of cambridgeltl/xcopa data/it/val.it.jsonl, written by XTREME's
# download_data.sh as xcopa/val-it.jsonl.
_XCOPA_IT = [
    {"premise": "L'uomo aprì il rubinetto.", "choice1": "Il gabinetto si riempì d'acqua.",
     "choice2": "Dell'acqua fluì dal beccuccio.", "question": "effect", "label": 1, "idx": 0,
     "changed": False},
    {"premise": "La donna andò in pensione.", "choice1": "Ricevette la sua pensione.",
     "choice2": "Ripagò il suo mutuo.", "question": "effect", "label": 0, "idx": 2,
     "changed": False},
]
# SuperGLUE COPA (train.jsonl, XTREME's xcopa/train-en.jsonl): no "changed" field.
_COPA_EN = ('{"premise": "My body cast a shadow over the grass.", "choice1": "The sun was '
            'rising.", "choice2": "The grass was cut.", "question": "cause", "idx": 0, '
            '"label": 0}\n')


def test_xcopa_and_copa(tmp_path):
  path = _jsonl(tmp_path / "xcopa" / "val-it.jsonl", _XCOPA_IT)
  first, second = readers.read_xcopa(path)
  assert first == ChoiceExample(f"{path}:1", "L'uomo aprì il rubinetto. What was the effect?",
                                ("Il gabinetto si riempì d'acqua.",
                                 "Dell'acqua fluì dal beccuccio."), 1)
  assert (second.guid, second.label) == (f"{path}:2", 0)
  (en,) = readers.read_xcopa(_write(tmp_path / "xcopa" / "train-en.jsonl", _COPA_EN))
  assert (en.context.endswith("What was the cause?"), en.choices[en.label]) == (
      True, "The sun was rising.")


def _copa(**changes):
  record = {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "effect",
            "label": 0, "idx": 0}
  record.update(changes)
  return {k: v for k, v in record.items() if v is not None}


@pytest.mark.parametrize("bad, message", [
    (_copa(choice2=None), r":2: missing field 'choice2'; expected one JSON object a line"),
    (_copa(label=2), r":2: label 2 is not 0 \(choice1\) or 1 \(choice2\)"),
    (_copa(label="1"), r":2: label is a string, not an integer"),
    (_copa(label=True), r":2: label is a boolean, not an integer"),
    (_copa(question="why"), r":2: question 'why' is not one of \('cause', 'effect'\)"),
    (_copa(premise=["P."]), r":2: premise is a list, not a string"),
    # SuperGLUE's COPA test.jsonl carries no label.
    (_copa(label=None), r":2: missing field 'label'"),
])
def test_xcopa_bad_record(tmp_path, bad, message):
  path = _jsonl(tmp_path / "bad.jsonl", [_copa(), bad])
  with pytest.raises(DataError, match=r"bad\.jsonl" + message):
    readers.read_xcopa(path)


def test_xcopa_bad_files(tmp_path):
  broken = _write(tmp_path / "broken.jsonl", json.dumps(_copa()) + "\n\n{\"premise\": \n")
  with pytest.raises(DataError, match=r"broken\.jsonl:3: invalid JSON"):
    readers.read_xcopa(broken)
  with pytest.raises(DataError, match=r"list\.jsonl:1: the line is a list, not an object"):
    readers.read_xcopa(_write(tmp_path / "list.jsonl", "[1, 2]\n"))
  with pytest.raises(DataError, match=r"empty\.jsonl: no examples; expected one JSON object"):
    readers.read_xcopa(_write(tmp_path / "empty.jsonl", "\n"))
  latin1 = tmp_path / "latin1.jsonl"
  latin1.write_bytes(b'{"premise": "caf\xe9"}\n')
  with pytest.raises(DataError, match=r"latin1\.jsonl:1: not UTF-8"):
    readers.read_xcopa(latin1)
  # XTREME's utils_preprocess.py sets every test label to 0.
  blanked = _jsonl(tmp_path / "test-et.jsonl", [_copa(idx=i) for i in range(500)])
  with pytest.raises(DataError, match=r"test-et\.jsonl: every label is 0.*cambridgeltl/xcopa"):
    readers.read_xcopa(blanked)


def test_errors_are_one_line(tmp_path):
  path = _jsonl(tmp_path / "bad.jsonl", [_copa(label=7)])
  with pytest.raises(DataError) as info:
    readers.read_xcopa(path)
  assert "\n" not in str(info.value)


# Social IQa v1.4 (socialIQa_v1.4_trn.jsonl), the fields XTREME's siqa_data.py reads.
_SIQA = {"context": "Cameron decided to have a barbecue and gathered her friends together.",
         "question": "How would Others feel as a result?", "answerA": "like attending",
         "answerB": "like staying home", "answerC": "a good friend to have", "correct": "A"}


def test_siqa(tmp_path):
  path = _jsonl(tmp_path / "socialIQa_v1.4_trn.jsonl", [_SIQA, {**_SIQA, "correct": "C"}])
  first, second = readers.read_siqa(path)
  assert first.choices == ("like attending", "like staying home", "a good friend to have")
  assert (first.context, first.label, second.label) == (
      f"{_SIQA['context']} {_SIQA['question']}", 0, 2)
  bad = _jsonl(tmp_path / "bad.jsonl", [{**_SIQA, "correct": "D"}])
  with pytest.raises(DataError, match=r"bad\.jsonl:1: correct 'D' is not one of"):
    readers.read_siqa(bad)
  no_c = _jsonl(tmp_path / "no_c.jsonl", [{k: v for k, v in _SIQA.items() if k != "answerC"}])
  with pytest.raises(DataError, match=r"no_c\.jsonl:1: missing field 'answerC'"):
    readers.read_siqa(no_c)


# ---- LAReQA: XQuAD-R ----

def _paragraph(context, breaks, qas):
  # google-research-datasets/lareqa xquad-r/{lang}.json: SQuAD v1.1 paragraphs plus
  # sentence_breaks (and their sentences, which XTREME does not read).
  return {"context": context, "qas": qas, "sentence_breaks": breaks,
          "sentences": [context[s:e] for s, e in breaks]}


def _qa(qid, question, context, answer):
  return {"answers": [{"answer_start": context.index(answer), "text": answer}], "id": qid,
          "question": question}


_EN = "The Panthers gave up 308 points. Kawann Short led in sacks. The Panthers gave up 308 points."
_DE = "Die Panthers ließen 308 Punkte zu. Kawann Short führte bei den Sacks."


def _xquad_r(paragraphs):
  return json.dumps({"data": [{"paragraphs": paragraphs, "title": "Super_Bowl_50"}],
                     "version": "1.1"})


def _lareqa_files(tmp_path):
  en = [_paragraph("Unasked paragraph.", [[0, 18]], []),
        _paragraph(_EN, [[0, 32], [33, 59], [60, 92]],
                   [_qa("56beb4343aeaaa14008c925b", "How many points did the Panthers defense "
                        "surrender?", _EN, "308"),
                    _qa("56beb4343aeaaa14008c925c", "Who led the team in sacks?", _EN,
                        "Kawann Short")])]
  de = [_paragraph("Unbefragt.", [[0, 10]], []),
        _paragraph(_DE, [[0, 34], [35, 69]],
                   [_qa("56beb4343aeaaa14008c925b", "Wie viele Punkte?", _DE, "308")])]
  return {"en": _write(tmp_path / "xquad-r" / "en.json", _xquad_r(en)),
          "de": _write(tmp_path / "xquad-r" / "de.json", _xquad_r(de))}


def test_lareqa_retrieval_set(tmp_path):
  out = readers.read_lareqa(_lareqa_files(tmp_path))
  # Ids as XTREME's utils_lareqa: questions {id}_{lang}, candidates
  # {lang}_{paragraph number}_{sentence}; a paragraph without questions adds none.
  assert [c.id for c in out.candidates] == ["de_2_0", "de_2_1", "en_2_0", "en_2_1", "en_2_2"]
  assert out.candidates[0] == Candidate("de_2_0", "de", "Die Panthers ließen 308 Punkte zu.", _DE)
  points = frozenset({"de_2_0", "en_2_0", "en_2_2"})  # the answer sentence, twice in English
  b, c = "56beb4343aeaaa14008c925b", "56beb4343aeaaa14008c925c"  # groups: the question ids
  assert out.queries == (
      Query(f"{b}_de", "de", "Wie viele Punkte?", points, b),
      Query(f"{b}_en", "en", "How many points did the Panthers defense surrender?", points, b),
      Query(f"{c}_en", "en", "Who led the team in sacks?", frozenset({"en_2_1"}), c))
  # One language alone: its own answer sentences; merged, those of the whole group.
  de = readers.read_lareqa_language(tmp_path / "xquad-r" / "de.json", "de")
  assert de.queries[0].relevant == {"de_2_0"} and len(de.candidates) == 2


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update(sentence_breaks=[[0, 20]]),
     r"question q1: answer_start 24 is in no sentence"),
    (lambda p: p["qas"][0]["answers"].append({"answer_start": 0, "text": "X"}), r"2 answers"),
    (lambda p: p.pop("sentence_breaks"), r"missing field 'sentence_breaks'"),
    (lambda p: p.update(sentence_breaks=[[0, "20"]]), r"sentence_breaks is not a list of"),
    (lambda p: p["qas"].append(dict(p["qas"][0])), r"query id 'q1_en' appears twice"),
])
def test_lareqa_bad_paragraph(tmp_path, mutate, message):
  context = "Ada Lovelace wrote. The first program appeared in 1843."
  para = _paragraph(context, [[0, 19], [20, 55]], [_qa("q1", "When?", context, "first")])
  mutate(para)
  path = _write(tmp_path / "en.json", _xquad_r([para]))
  with pytest.raises(DataError, match=message) as info:
    readers.read_lareqa({"en": path})
  assert str(path) in str(info.value)


# ---- Mewsli-X ----

# The first record of google-research dense_representations_for_entity_retrieval/
# mel/mewsli_x/testdata/example_mentions.jsonl (wikinews_mentions-{split}.jsonl format).
_HELSINKI_TEXT = (
    "Transit strike affects 100,000 in Helsinki\n\n \n\nIn Helsinki, the Finnish trade "
    "union for bus and truck drivers has gone on strike on Sunday evening, mainly over the "
    "use of part-time labor. The strike is estimated to affect 100,000 people in the "
    "capital area, crowding the remaining transit system on Monday morning. The strike is "
    "halting almost half of all bus traffic in and around Helsinki, especially hurting "
    "travellers commuting from outlying cities Espoo and Vantaa, where over 60% of bus "
    "traffic will be stopped.\n\nThe strike also affects 4,000 of Finland's 55,000 "
    "delivery trucks, as well as waste management in many areas. The strike is not "
    "affecting trains, trams or the underground, but heavy crowding is to be expected. "
    "Authorities are also warning of traffic jams during rush-hours as people use personal "
    "cars instead of public transportation.")
_HELSINKI = {
    "context": {"document_title": "Transit strike affects 100,000 in Helsinki",
                "document_url": "https://en.wikinews.org/wiki?curid=34985",
                "document_id": "en-34985", "language": "en", "text": _HELSINKI_TEXT,
                "sentence_spans": [{"start": s, "end": e} for s, e in (
                    (0, 42), (47, 187), (188, 314), (315, 517), (519, 628), (629, 728),
                    (729, 853))]},
    "mentions": [{"example_id": "c79595350cc2d5c7f2b095e2cb785212",
                  "mention_span": {"start": 50, "end": 58, "text": "Helsinki"},
                  "entity_id": "Q1757",
                  "metadata": {"curid": "34985", "revid": "4371952",
                               "text_md5": "c0f4359b943916f760583e2fd6599617",
                               "mention_url": "http://en.wikipedia.org/wiki/Helsinki",
                               "bin_name": "bin04_1000-inf"}}]}

# A mention with braces and repeated spaces around it, in a second language.
_KYIV_TEXT = "Intro.  A {braced} word\nand  Kyiv   here {x}. Next."
_KYIV = {"context": {"document_title": "t", "document_url": "u", "document_id": "uk-1",
                     "language": "uk", "text": _KYIV_TEXT,
                     "sentence_spans": [{"start": 0, "end": 6}, {"start": 8, "end": 45},
                                        {"start": 46, "end": 51}]},
         "mentions": [{"example_id": "e-kyiv", "entity_id": "Q1899",
                       "mention_span": {"start": 29, "end": 33, "text": "Kyiv"}}]}


def _entity(qid, description, spans, lang="en"):
  # candidate_set_entities.jsonl (mewsli-x.md "Entity Candidate Set").
  return {"entity_id": qid, "title": qid, "description": description,
          "sentence_spans": [{"start": s, "end": e} for s, e in spans],
          "description_language": lang, "description_url": f"https://{lang}.wikipedia.org/"}


_ENTITIES = [
    _entity("Q1757", "Helsinki is the capital of Finland.", [(0, 35)], "fi"),
    _entity("Q1899", "Kyiv is the capital.\nIt lies on the  Dnieper. Not kept.",
            [(0, 20), (21, 46)]),
    _entity("Q42", "Douglas Adams was an author.", [(0, 28)]),
]


def test_mewslix_queries_and_candidates(tmp_path):
  mentions = _jsonl(tmp_path / "wikinews_mentions-dev.jsonl", [_HELSINKI, _KYIV])
  candidates = readers.read_mewslix_candidates(
      _jsonl(tmp_path / "candidate_set_entities.jsonl", _ENTITIES))
  # Texts as utils_mewslix.py preprocess_entity_description / preprocess_mention
  # (checked against them): sentences joined, newlines to spaces, one pass of
  # "  " -> " "; the mention, then its sentence with it in braces and other
  # braces as parentheses.
  assert candidates[1] == Candidate("Q1899", "en", "Kyiv is the capital. It lies on the Dnieper.")
  out = readers.read_mewslix(mentions, candidates, "en")
  assert out.candidates is candidates
  assert out.queries == (Query(
      "c79595350cc2d5c7f2b095e2cb785212", "en",
      "Helsinki: In { Helsinki } , the Finnish trade union for bus and truck drivers has gone "
      "on strike on Sunday evening, mainly over the use of part-time labor.",
      frozenset({"Q1757"})),)
  (kyiv,) = readers.read_mewslix_queries(mentions, "uk")
  assert kyiv.text == "Kyiv: A (braced) word and  { Kyiv }  here (x)."
  assert len(readers.read_mewslix_queries(mentions)) == 2
  with pytest.raises(DataError, match=r"wikinews_mentions-dev\.jsonl: no mentions in language "
                                      r"'ja'"):
    readers.read_mewslix_queries(mentions, "ja")
  with pytest.raises(DataError, match=r"query 'e-kyiv' has relevant candidates \['Q1899'\], "
                                      r"missing from the pool"):
    readers.read_mewslix(mentions, candidates[:1], "uk")


def _mention(**changes):
  record = json.loads(json.dumps(_KYIV))
  record["mentions"][0].update(changes.pop("mention", {}))
  record["context"].update(changes)
  return record


@pytest.mark.parametrize("bad, message", [
    # XTREME's utils_preprocess.py blanks the test entity ids.
    (_mention(mention={"entity_id": ""}), r"mention without entity_id.*get-mewsli-x\.sh"),
    # The released wikinews_mentions_no_text-*.jsonl.
    (_mention(text=""), r"the context text is empty.*get-mewsli-x\.sh"),
    (_mention(mention={"mention_span": {"start": 29, "end": 33, "text": "Kiev"}}),
     r"mention 'Kiev' is not the context's text at \[29, 33\)"),
    (_mention(sentence_spans=[{"start": 0, "end": 31}]),
     r"mention 'Kyiv' at \[29, 33\) is not inside one sentence"),
    (_mention(sentence_spans=[{"start": 8, "end": 99}]), r"sentence span \[8, 99\) is empty or "
                                                         r"outside the 51-character text"),
    (_mention(mention={"mention_span": {"start": 29, "end": 33}}), r"missing field 'text'"),
])
def test_mewslix_bad_mention(tmp_path, bad, message):
  path = _jsonl(tmp_path / "wikinews_mentions-test.jsonl", [_KYIV, bad])
  with pytest.raises(DataError, match=r"wikinews_mentions-test\.jsonl:2: " + message):
    readers.read_mewslix_queries(path)


def test_mewslix_bad_candidates(tmp_path):
  twice = _jsonl(tmp_path / "twice.jsonl", [_ENTITIES[0], _ENTITIES[0]])
  with pytest.raises(DataError, match=r"twice\.jsonl: entity id 'Q1757' appears twice"):
    readers.read_mewslix_candidates(twice)
  no_lang = _jsonl(tmp_path / "no_lang.jsonl", [{k: v for k, v in _ENTITIES[2].items()
                                                 if k != "description_language"}])
  with pytest.raises(DataError, match=r"no_lang\.jsonl:1: missing field 'description_language'"):
    readers.read_mewslix_candidates(no_lang)


def _pair(mention_record, entity):
  # wikipedia_pairs-{train,dev}.jsonl (mewsli-x.md "Wikipedia portion").
  return {"contextual_mention": {"context": mention_record["context"],
                                 "mention": mention_record["mentions"][0]},
          "entity": entity}


def test_mewslix_pairs(tmp_path):
  path = _jsonl(tmp_path / "wikipedia_pairs-dev.jsonl",
                [_pair(_HELSINKI, _ENTITIES[0]), _pair(_KYIV, _ENTITIES[1]),
                 _pair(_mention(mention={"example_id": "e2"}), _ENTITIES[1])])
  out = readers.read_mewslix_pairs(path)
  assert [q.id for q in out.queries] == ["c79595350cc2d5c7f2b095e2cb785212", "e-kyiv", "e2"]
  assert [c.id for c in out.candidates] == ["Q1757", "Q1899"]
  bad = _jsonl(tmp_path / "bad.jsonl", [_pair(_KYIV, _ENTITIES[2])])
  with pytest.raises(DataError, match=r"bad\.jsonl:1: the mention links \['Q1899'\] but the "
                                      r"pair's entity is 'Q42'"):
    readers.read_mewslix_pairs(bad)
