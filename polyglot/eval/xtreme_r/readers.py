"""Readers for XTREME-R's new tasks (Ruder et al., 2021): XCOPA, LAReQA, Mewsli-X.

Formats, as XTREME's `scripts/download_data.sh` lays them out under `download/`:
- `xcopa/{train,val}-en.jsonl` (SuperGLUE COPA) and `xcopa/{val,test}-{lang}.jsonl`
  (cambridgeltl/xcopa `data/{lang}/{val,test}.{lang}.jsonl`): one JSON object a
  line, `premise`, `choice1`, `choice2`, `question` ("cause" or "effect"),
  `label` (0 or 1), `idx` (`read_xcopa`). XTREME's `utils_preprocess.py` sets
  every test label to 0; a file whose labels are all 0 is refused.
- `siqa/socialIQa_v1.4_{trn,dev}.jsonl`: `context`, `question`, `answerA`..`C`,
  `correct` ("A".."C") (`read_siqa`); XTREME-R fine-tunes on SIQA before COPA
  (`scripts/train_xcopa.sh`).
- `lareqa/xquad-r/{lang}.json`: XQuAD in SQuAD v1.1 JSON with each paragraph's
  `sentence_breaks` (google-research-datasets/lareqa) (`read_lareqa`).
- `mewslix/candidate_set_entities.jsonl`, `mewslix/wikipedia_pairs-{train,dev}.jsonl`
  and WikiNews mentions, either `mewslix/wikinews_mentions/{dev,test}-{lang}.jsonl`
  (XTREME's per-language split, test entity ids blanked) or the
  `wikinews_mentions-{dev,test}.jsonl` written by google-research's
  `get-mewsli-x.sh` (schema: `dense_representations_for_entity_retrieval/mel/
  mewsli-x.md`) (`read_mewslix_candidates`, `read_mewslix_queries`,
  `read_mewslix_pairs`).

Multiple choice gets its own example type: the model scores each (premise,
choice) pair and a softmax runs over the choices of one example
(`AutoModelForMultipleChoice` in XTREME's `third_party/run_xcopa.py`), so the
choices travel together and their number varies (2 in COPA, 3 in SIQA).

LAReQA and Mewsli-X share one type, `RetrievalSet`: queries with their
language and the ids of their relevant candidates, and a candidate pool. Ids
are XTREME's: LAReQA questions `{qas id}_{lang}` and candidates
`{lang}_{paragraph number}_{sentence position}` (`third_party/utils_lareqa.py`),
Mewsli-X mentions by `example_id` and entities by WikiData QID.

A malformed line raises `DataError` naming the file and line (JSON of a whole
file: the article and paragraph).
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping

from polyglot.paths import Path
from polyglot.errors import DataError
from polyglot.eval.readers import (Candidate, ChoiceExample, Query, RetrievalSet, _check_ids,
                                    _lines, _squad_articles, merge_retrieval_sets,
                                    retrieval_set)

XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
LAREQA_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MEWSLIX_LANGUAGES = ("ar", "de", "en", "es", "fa", "ja", "pl", "ro", "ta", "tr", "uk")

_COPA_QUESTIONS = ("cause", "effect")
_SIQA_ANSWERS = ("A", "B", "C")
_COPA_SHAPE = "one JSON object a line with premise, choice1, choice2, question, label"
_SIQA_SHAPE = "one JSON object a line with context, question, answerA-C, correct"
# A test file with this many examples, all labelled 0, is XTREME's blanked copy.
_BLANKED_MIN_EXAMPLES = 20
# Mewsli-X marks the mention in its query text (utils_mewslix.py `_MARKER_L/R`)
# and turns braces already in the sentence into parentheses.
_MARKER_L, _MARKER_R = "{", "}"
_BRACED = re.compile(rf"{re.escape(_MARKER_L)}(.*?){re.escape(_MARKER_R)}")


# ---- JSON fields ----

def _kind(value) -> str:
  return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
          type(None): "null", int: "an integer", float: "a number"}.get(type(value), "?")


def _get(obj: Mapping, key: str, kind: type, where: str, shape: str):
  """`obj[key]`, which must be a `kind` (bool is not an int here)."""
  if key not in obj:
    raise DataError(f"{where}: missing field {key!r}; expected {shape}")
  value = obj[key]
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise DataError(f"{where}: {key} is {_kind(value)}, not {_kind(kind())}; expected {shape}")
  return value


def _json_lines(path: Path, shape: str) -> Iterator[tuple[str, dict]]:
  """('file:line', object) of each non-blank line of a JSON-lines file; none is an error."""
  found = False
  for lineno, line in _lines(path):
    if not line.strip():
      continue
    where = f"{path}:{lineno}"
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: invalid JSON ({e.msg}, column {e.colno}); expected {shape}"
                      ) from e
    if not isinstance(obj, dict):
      raise DataError(f"{where}: the line is {_kind(obj)}, not an object; expected {shape}")
    found = True
    yield where, obj
  if not found:
    raise DataError(f"{path}: no examples; expected {shape}")


# ---- XCOPA, COPA, SIQA ----

def copa_context(premise: str, question: str) -> str:
  """The first segment of each (context, choice) pair: XTREME's `run_xcopa.py`
  `preprocess_function` template, in English for every language."""
  return f"{premise} What was the {question}?"


def _copa_example(where: str, obj: dict) -> ChoiceExample:
  get = functools.partial(_get, obj, where=where, shape=_COPA_SHAPE)
  question, label = get("question", str), get("label", int)
  if question not in _COPA_QUESTIONS:
    raise DataError(f"{where}: question {question!r} is not one of {_COPA_QUESTIONS}")
  if label not in (0, 1):
    raise DataError(f"{where}: label {label} is not 0 (choice1) or 1 (choice2)")
  return ChoiceExample(where, copa_context(get("premise", str), question),
                       (get("choice1", str), get("choice2", str)), label)


def read_xcopa(path: Path) -> list[ChoiceExample]:
  """XCOPA or English COPA examples in file order (SuperGLUE's unlabelled COPA test
  file is refused: it has no `label`)."""
  out = [_copa_example(where, obj) for where, obj in _json_lines(path, _COPA_SHAPE)]
  if len(out) >= _BLANKED_MIN_EXAMPLES and not any(ex.label for ex in out):
    raise DataError(f"{path}: every label is 0, as in XTREME's download, which blanks the "
                    "XCOPA test labels; read cambridgeltl/xcopa's data/<lang>/test.<lang>.jsonl")
  return out


def _siqa_example(where: str, obj: dict) -> ChoiceExample:
  get = functools.partial(_get, obj, kind=str, where=where, shape=_SIQA_SHAPE)
  correct = get("correct")
  if correct not in _SIQA_ANSWERS:
    raise DataError(f"{where}: correct {correct!r} is not one of {_SIQA_ANSWERS}")
  return ChoiceExample(where, f"{get('context')} {get('question')}",
                       tuple(get(f"answer{a}") for a in _SIQA_ANSWERS),
                       _SIQA_ANSWERS.index(correct))


def read_siqa(path: Path) -> list[ChoiceExample]:
  """Social IQa v1.4 examples in file order, `correct` A/B/C as label 0/1/2
  (XTREME's `third_party/siqa_data/siqa_data.py`)."""
  return [_siqa_example(where, obj) for where, obj in _json_lines(path, _SIQA_SHAPE)]


# ---- LAReQA: XQuAD-R ----

_XQUAD_R_SHAPE = ("expected XQuAD-R: SQuAD v1.1 JSON whose paragraphs have sentence_breaks "
                  "[[start, end], ...] and qas with one answer each")


def _sentence_breaks(para: dict, where: str) -> list[tuple[int, int]]:
  breaks = _get(para, "sentence_breaks", list, where, _XQUAD_R_SHAPE)
  if not all(isinstance(b, list) and len(b) == 2 and all(type(x) is int for x in b)
             for b in breaks):
    raise DataError(f"{where}: sentence_breaks is not a list of [start, end]; {_XQUAD_R_SHAPE}")
  return [tuple(b) for b in breaks]


def _answer_sentence(qa: dict, context: str, breaks: list[tuple[int, int]], where: str) -> str:
  """The sentence holding the answer's first character (utils_lareqa.generate_examples)."""
  answers = _get(qa, "answers", list, where, _XQUAD_R_SHAPE)
  if len(answers) != 1 or not isinstance(answers[0], dict):
    raise DataError(f"{where}: {len(answers)} answers; {_XQUAD_R_SHAPE}")
  start = _get(answers[0], "answer_start", int, where, _XQUAD_R_SHAPE)
  for s, e in breaks:
    if s <= start < e:
      return context[s:e]
  raise DataError(f"{where}: answer_start {start} is in no sentence of sentence_breaks; fix "
                  "the breaks (XTREME skips such a question)")


def _lareqa_file(path: Path, lang: str, candidates: dict[str, Candidate],
                 answers: dict[str, set[str]]) -> list[tuple[str, str, str]]:
  """(question id, text, xling id) of one language; adds its paragraphs' sentences to
  `candidates` and the answer sentences to `answers[xling id]`."""
  questions = []
  paragraph_no = 0  # counts every paragraph of the file, as utils_lareqa
  for a, article in enumerate(_squad_articles(path)):
    paragraphs = article.get("paragraphs", []) if isinstance(article, dict) else None
    if not isinstance(paragraphs, list):
      raise DataError(f"{path}: article {a}: no paragraphs list; {_XQUAD_R_SHAPE}")
    for p, para in enumerate(paragraphs):
      paragraph_no += 1
      where = f"{path}: article {a} paragraph {p}"
      if not isinstance(para, dict):
        raise DataError(f"{where}: {_kind(para)}, not an object; {_XQUAD_R_SHAPE}")
      context = _get(para, "context", str, where, _XQUAD_R_SHAPE)
      breaks = _sentence_breaks(para, where)
      ids = [f"{lang}_{paragraph_no}_{i}" for i in range(len(breaks))]
      for qa in _get(para, "qas", list, where, _XQUAD_R_SHAPE):
        if not isinstance(qa, dict):
          raise DataError(f"{where}: a question is {_kind(qa)}, not an object; {_XQUAD_R_SHAPE}")
        xling = _get(qa, "id", str, where, _XQUAD_R_SHAPE)
        answer = _answer_sentence(qa, context, breaks, f"{where} question {xling}")
        for cid, (s, e) in zip(ids, breaks):
          candidates.setdefault(cid, Candidate(cid, lang, context[s:e], context))
          if context[s:e] == answer:  # by text, as utils_lareqa.load_data
            answers.setdefault(xling, set()).add(cid)
        questions.append((f"{xling}_{lang}", _get(qa, "question", str, where, _XQUAD_R_SHAPE),
                          xling))
  return questions


def read_lareqa_language(path: Path, lang: str) -> RetrievalSet:
  """One language of XQuAD-R: its questions, each grouped by its id (the same question
  in every language), and every sentence of its paragraphs that have a question."""
  candidates: dict[str, Candidate] = {}
  answers: dict[str, set[str]] = {}
  questions = _lareqa_file(path, lang, candidates, answers)
  return retrieval_set((Query(qid, lang, text, frozenset(answers[xling]), group=xling)
                        for qid, text, xling in questions), candidates.values(), str(path))


def read_lareqa(files: Mapping[str, Path]) -> RetrievalSet:
  """XQuAD-R as LAReQA's retrieval task (`third_party/utils_lareqa.py` `load_data`).

  `files` maps a language to its `xquad-r/{lang}.json`. Every question of every
  language is a query; the pool is every sentence of every paragraph that has
  a question; a question's relevant candidates are the sentences, in all
  languages, holding the answer of a question with its id (11 in XQuAD-R).
  """
  return merge_retrieval_sets([read_lareqa_language(files[lang], lang) for lang in sorted(files)],
                              ", ".join(str(files[lang]) for lang in sorted(files)))


# ---- Mewsli-X ----

_ENTITY_SHAPE = ("expected Mewsli-X entities: entity_id, description, description_language, "
                 "sentence_spans [{start, end}]")
_MENTIONS_SHAPE = ("expected Mewsli-X WikiNews mentions: context {language, text, "
                   "sentence_spans}, mentions [{example_id, mention_span {start, end, text}, "
                   "entity_id}]")
_PAIRS_SHAPE = ("expected Mewsli-X Wikipedia pairs: contextual_mention {context, mention}, "
                "entity")


def _spans(obj: dict, text: str, where: str, shape: str) -> list[tuple[int, int]]:
  """`sentence_spans` as (start, end), each non-empty and inside `text` (schema.Span)."""
  out = []
  for span in _get(obj, "sentence_spans", list, where, shape):
    if not isinstance(span, dict):
      raise DataError(f"{where}: a sentence span is {_kind(span)}, not an object; {shape}")
    s, e = _get(span, "start", int, where, shape), _get(span, "end", int, where, shape)
    if not 0 <= s < e <= len(text):
      raise DataError(f"{where}: sentence span [{s}, {e}) is empty or outside the "
                      f"{len(text)}-character text")
    out.append((s, e))
  return out


def _normalize(text: str) -> str:
  # utils_mewslix.py: "Normalize away newlines and extra spaces" (one replace pass).
  return " ".join(text.splitlines()).replace("  ", " ").strip()


def _entity(obj: dict, where: str) -> Candidate:
  """An entity with its description's sentences as text (`preprocess_entity_description`)."""
  get = functools.partial(_get, obj, kind=str, where=where, shape=_ENTITY_SHAPE)
  description = get("description")
  text = " ".join(description[s:e] for s, e in _spans(obj, description, where, _ENTITY_SHAPE))
  return Candidate(get("entity_id"), get("description_language"), _normalize(text))


def read_mewslix_candidates(path: Path) -> tuple[Candidate, ...]:
  """The entities of `candidate_set_entities.jsonl` (1,003,893 in mewsli-x_20220518_6)."""
  out = tuple(_entity(obj, where) for where, obj in _json_lines(path, _ENTITY_SHAPE))
  _check_ids(out, "entity", str(path))
  return out


def _mention_text(text: str, spans: list[tuple[int, int]], start: int, end: int,
                  mention: str, where: str) -> str:
  """The mention, a colon, then its sentence with the mention in braces
  (utils_mewslix.py `preprocess_mention`: one sentence of context)."""
  if not 0 <= start < end or text[start:end] != mention:
    raise DataError(f"{where}: mention {mention!r} is not the context's text at [{start}, "
                    f"{end}); fix mention_span")
  sentence = next(((s, e) for s, e in spans if s <= start < e and s < end <= e), None)
  if sentence is None:
    raise DataError(f"{where}: mention {mention!r} at [{start}, {end}) is not inside one "
                    "sentence of sentence_spans")
  s, e = sentence
  left, right = (_BRACED.sub(r"(\1)", part) for part in (text[s:start], text[end:e]))
  return _normalize(f"{mention}: {left} {_MARKER_L} {mention} {_MARKER_R} {right}")


def _mention_query(context: dict, mention: dict, where: str, shape: str) -> Query:
  """A mention in its context as a query whose one relevant candidate is its entity."""
  text = _get(context, "text", str, where, shape)
  if not text:
    raise DataError(f"{where}: the context text is empty, as in the released "
                    "wikinews_mentions_no_text files; run get-mewsli-x.sh to restore it")
  span = _get(mention, "mention_span", dict, where, shape)
  entity_id = _get(mention, "entity_id", str, where, shape).strip()
  if not entity_id:
    raise DataError(f"{where}: mention without entity_id (XTREME's download blanks the test "
                    "labels); read wikinews_mentions-test.jsonl from get-mewsli-x.sh")
  query_text = _mention_text(text, _spans(context, text, where, shape),
                             _get(span, "start", int, where, shape),
                             _get(span, "end", int, where, shape),
                             _get(span, "text", str, where, shape), where)
  return Query(_get(mention, "example_id", str, where, shape),
               _get(context, "language", str, where, shape), query_text,
               frozenset([entity_id]))


def read_mewslix_queries(path: Path, lang: str | None = None) -> tuple[Query, ...]:
  """The WikiNews mentions of `path` (of language `lang` only, when given), in file order."""
  out = []
  for where, obj in _json_lines(path, _MENTIONS_SHAPE):
    context = _get(obj, "context", dict, where, _MENTIONS_SHAPE)
    if lang is not None and _get(context, "language", str, where, _MENTIONS_SHAPE) != lang:
      continue
    for mention in _get(obj, "mentions", list, where, _MENTIONS_SHAPE):
      if not isinstance(mention, dict):
        raise DataError(f"{where}: a mention is {_kind(mention)}, not an object; "
                        f"{_MENTIONS_SHAPE}")
      out.append(_mention_query(context, mention, where, _MENTIONS_SHAPE))
  if not out:
    raise DataError(f"{path}: no mentions in language {lang!r}; Mewsli-X has "
                    f"{', '.join(MEWSLIX_LANGUAGES)}")
  return tuple(out)


def read_mewslix(path: Path, candidates: tuple[Candidate, ...],
                 lang: str | None = None) -> RetrievalSet:
  """WikiNews mentions (of `lang`) against the entity pool of `read_mewslix_candidates`."""
  return retrieval_set(read_mewslix_queries(path, lang), candidates, str(path))


def read_mewslix_pairs(path: Path) -> RetrievalSet:
  """`wikipedia_pairs-{train,dev}.jsonl`: each mention a query, the pool its entities
  (English Wikipedia, XTREME-R's fine-tuning data for Mewsli-X)."""
  queries, entities = [], {}
  for where, obj in _json_lines(path, _PAIRS_SHAPE):
    cm = _get(obj, "contextual_mention", dict, where, _PAIRS_SHAPE)
    query = _mention_query(_get(cm, "context", dict, where, _PAIRS_SHAPE),
                           _get(cm, "mention", dict, where, _PAIRS_SHAPE), where, _PAIRS_SHAPE)
    entity = _entity(_get(obj, "entity", dict, where, _PAIRS_SHAPE), where)
    if query.relevant != {entity.id}:
      raise DataError(f"{where}: the mention links {sorted(query.relevant)} but the pair's "
                      f"entity is {entity.id!r}")
    queries.append(query)
    entities.setdefault(entity.id, entity)
  return retrieval_set(queries, entities.values(), str(path))
