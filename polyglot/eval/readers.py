"""Readers: task files and TFDS builders into frozen examples.

Formats (names in `FILE_READERS`; a benchmark adds its own with
`register_file_format`):
- `pair_tsv`, `pawsx_tsv`: `sentence1<TAB>sentence2<TAB>label`, no header
  (XNLI, PAWS-X as written by XTREME's `utils_preprocess.py`); `pawsx_tsv`
  drops the rows whose translation is the placeholder `NS` or empty, as the
  PAWS-X README asks (XTREME itself keeps them).
- `tag_text`: `token<TAB>tag` or `token TAG` per line (first field the token,
  last the tag, as XTREME's `utils_tag.py`), a blank line between sentences,
  `-DOCSTART-` lines skipped (CoNLL-2003).
- `conllu`: Universal Dependencies, FORM and UPOS (columns 2 and 4), with
  multiword tokens replaced by their fused form as XTREME's conversion does.
- `squad_json`: SQuAD v1.1 JSON (XQuAD, MLQA, TyDi QA GoldP).
- `tatoeba_text`: two line-aligned files, line i of one translates line i of
  the other (LASER's test sets).
- `bucc_text`: `id<TAB>sentence` files for both sides and `src_id<TAB>en_id`
  gold pairs (BUCC 2018).
Retrieval against a pool (`RetrievalSet`: queries, candidates, the relevant
ones) has no format here: XTREME-R registers LAReQA's and Mewsli-X's.

A malformed line, or one that is not UTF-8, raises `DataError` naming the
file and line; so does a SQuAD file that is not UTF-8 or not SQuAD's shape.
TensorFlow is imported only when a TFDS source is read.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence

from polyglot.paths import Path
from polyglot.errors import ConfigError, DataError
from polyglot.eval import tasks


@dataclasses.dataclass(frozen=True)
class PairExample:
  """A sentence pair with its class label (XNLI, PAWS-X)."""
  guid: str
  text_a: str
  text_b: str
  label: str


@dataclasses.dataclass(frozen=True)
class RankExample:
  """A query and one document with the document's relevance label (XGLUE WPR).

  A sentence pair (`text_a` the query, `text_b` the document) whose model
  scores relevance; `query_id` groups the documents ranked together (nDCG).
  `label` is None in an unlabelled test file.
  """
  guid: str
  query_id: int
  text_a: str
  text_b: str
  label: str | None


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
  """A context and its candidate continuations, `label` the right one's index (XCOPA).

  The model scores each (context, choice) pair; a softmax runs over one example's choices.
  """
  guid: str
  context: str
  choices: tuple[str, ...]
  label: int | None


@dataclasses.dataclass(frozen=True)
class TagExample:
  """A sentence of words with one tag per word (UD-POS, PAN-X/NER)."""
  guid: str
  words: tuple[str, ...]
  tags: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Answer:
  text: str
  start: int  # character offset in the context


@dataclasses.dataclass(frozen=True)
class QAExample:
  """A question over a context paragraph with its gold answers (SQuAD v1.1)."""
  guid: str  # the question id
  question: str
  context: str
  answers: tuple[Answer, ...]
  title: str = ""


@dataclasses.dataclass(frozen=True)
class TatoebaSet:
  """Line-aligned sentences: `source[i]` translates `english[i]`."""
  source: tuple[str, ...]
  english: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BuccSet:
  """BUCC 2018 sentence pools and the gold (source id, English id) pairs."""
  source_ids: tuple[str, ...]
  source: tuple[str, ...]
  english_ids: tuple[str, ...]
  english: tuple[str, ...]
  gold: frozenset[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Query:
  """A retrieval query (a LAReQA question, a Mewsli-X mention in its sentence).

  Queries of one `group` share their relevant candidates when sets are merged
  (`merge_retrieval_sets`): LAReQA's question in each language is answered by
  the answer sentence of every language.
  """
  id: str
  lang: str
  text: str
  relevant: frozenset[str]  # ids of the candidates that answer it
  group: str | None = None


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A retrievable item (a LAReQA answer sentence, a Mewsli-X entity description).

  It is encoded as `(text + context).replace("\\n", "")`, as XTREME encodes a
  LAReQA candidate (`third_party/evaluate_retrieval.py`); Mewsli-X
  candidates have no context.
  """
  id: str
  lang: str
  text: str
  context: str = ""

  @property
  def encoded(self) -> str:
    return (self.text + self.context).replace("\n", "")


@dataclasses.dataclass(frozen=True)
class RetrievalSet:
  """Queries and the candidate pool they are ranked against (`retrieval_set` checks it)."""
  queries: tuple[Query, ...]
  candidates: tuple[Candidate, ...]


Examples = (list[PairExample] | list[RankExample] | list[ChoiceExample] | list[TagExample]
            | list[QAExample] | TatoebaSet | BuccSet | RetrievalSet)


def _check_ids(items: Iterable, what: str, where: str) -> set[str]:
  ids = set()
  for item in items:
    if item.id in ids:
      raise DataError(f"{where}: {what} id {item.id!r} appears twice; ids must be unique")
    ids.add(item.id)
  return ids


def retrieval_set(queries: Iterable[Query], candidates: Iterable[Candidate],
                  where: str) -> RetrievalSet:
  """Queries and candidates with unique ids, each query with relevant candidates in the pool.

  `where` names the files in errors.
  """
  queries, candidates = tuple(queries), tuple(candidates)
  if not queries:
    raise DataError(f"{where}: no queries")
  _check_ids(queries, "query", where)
  pool = _check_ids(candidates, "candidate", where)
  for q in queries:
    missing = sorted(q.relevant - pool)
    if not q.relevant or missing:
      raise DataError(f"{where}: query {q.id!r} has relevant candidates {sorted(q.relevant)}, "
                      f"missing from the pool: {missing}; every query needs one in the pool")
  return RetrievalSet(queries, candidates)


def merge_retrieval_sets(sets: Sequence[RetrievalSet], where: str) -> RetrievalSet:
  """One pool for the queries of all `sets`: candidates by id (the first of each id kept,
  shared pools counted once), and each query's relevant candidates those of its group."""
  candidates = {}
  for s in sets:
    for c in s.candidates:
      candidates.setdefault(c.id, c)
  by_group: dict[str, set[str]] = {}
  for q in (q for s in sets for q in s.queries if q.group is not None):
    by_group.setdefault(q.group, set()).update(q.relevant)
  # A group's candidates left out of the pool (`--max_eval_examples` cuts) are not relevant.
  queries = [q if q.group is None else
             dataclasses.replace(q, relevant=frozenset(by_group[q.group] & candidates.keys()))
             for s in sets for q in s.queries]
  return retrieval_set(queries, candidates.values(), where)

# Tatoeba: XTREME's download script sorts the English side to hide the
# alignment (README: "change the order of the test sentences"); a sorted side
# this long is that file, not LASER's, and cannot be scored line by line.
_SORTED_CHECK_MIN_LINES = 20
_PAWSX_PLACEHOLDER = "NS"


def _not_utf8(where: str, e: UnicodeDecodeError) -> DataError:
  return DataError(f"{where}: not UTF-8 ({e.reason}): convert the file to UTF-8 (e.g. "
                   "`iconv -f latin1 -t utf-8`)")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
  """(1-based line number, line without its end-of-line) of a UTF-8 file."""
  with path.open("rb") as f:  # decoded line by line: an error names its line
    for lineno, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise _not_utf8(f"{path}:{lineno}", e) from e
      yield lineno, line.rstrip("\r\n")


def read_pair_tsv(path: Path, labels: Sequence[str] = (),
                  drop_placeholders: bool = False) -> list[PairExample]:
  """Sentence pairs; `labels`, when given, is the set a label must belong to."""
  out = []
  for lineno, line in _lines(path):
    if not line:
      continue
    fields = line.split("\t")
    if len(fields) != 3:
      raise DataError(f"{path}:{lineno}: expected 3 tab-separated fields (sentence1, sentence2, "
                      f"label), found {len(fields)}")
    a, b, label = fields
    if drop_placeholders and any(s.strip() in ("", _PAWSX_PLACEHOLDER) for s in (a, b)):
      continue
    label = label.strip()
    if labels and label not in labels:
      raise DataError(f"{path}:{lineno}: label {label!r} is not one of {tuple(labels)}")
    out.append(PairExample(f"{path}:{lineno}", a, b, label))
  return out


def read_tag_text(path: Path) -> list[TagExample]:
  """Tagged sentences, one `token<TAB>tag` (or `token TAG`) per line."""
  out, words, tags, first = [], [], [], 0
  for lineno, line in _lines(path):
    if not line.strip() or line.startswith("-DOCSTART-"):
      if words:
        out.append(TagExample(f"{path}:{first}", tuple(words), tuple(tags)))
        words, tags = [], []
      continue
    fields = line.split("\t") if "\t" in line else line.split()
    if len(fields) < 2 or not fields[0] or not fields[-1].strip():
      raise DataError(f"{path}:{lineno}: expected 'token<TAB>tag' or 'token TAG', found {line!r}")
    if not words:
      first = lineno
    words.append(fields[0])
    tags.append(fields[-1].strip())
  if words:
    out.append(TagExample(f"{path}:{first}", tuple(words), tuple(tags)))
  return out


# Which word of a multiword token keeps the fused form: the one nearest the
# root, ties broken by these UPOS rankings (XTREME's ud-conversion-tools,
# `conllu_to_conll.py --replace_subtokens_with_fused_forms`).
_POS_PRECEDENCE = {
    "default": ("VERB NOUN PROPN PRON ADJ NUM ADV INTJ AUX ADP DET PART CCONJ SCONJ X "
                "PUNCT").split(),
    "es": "VERB AUX PRON ADP DET".split(),
    "fr": "VERB AUX PRON NOUN ADJ ADV ADP DET PART SCONJ CONJ".split(),
    "it": "VERB AUX ADV PRON ADP DET INTJ".split(),
}


@dataclasses.dataclass(frozen=True)
class _UdWord:
  id: int
  form: str
  upos: str
  head: int


def _depth(word_id: int, heads: dict[int, int]) -> int:
  """Edges from a word to the root (0) along HEAD; a cycle counts as deepest."""
  depth = 0
  while word_id != 0 and depth <= len(heads):
    word_id = heads.get(word_id, 0)
    depth += 1
  return depth


def _span_head(span: list[_UdWord], heads: dict[int, int], lang: str) -> _UdWord:
  ranking = _POS_PRECEDENCE.get(lang, _POS_PRECEDENCE["default"])
  rank = {pos: i for i, pos in enumerate(ranking)}
  depths = [_depth(w.id, heads) for w in span]
  highest = [w for w, d in zip(span, depths) if d == min(depths)]
  return min(highest, key=lambda w: rank.get(w.upos, len(ranking)))


def _fuse(words: list[_UdWord], fused: list[tuple[int, int, str]], lang: str,
          where: str) -> list[_UdWord]:
  """Replaces each multiword token's words by its span head carrying the fused form.

  XTREME's converter (networkx over HEAD and DEPS edges) also counts
  enhanced-dependency edges as ancestors; this uses the basic HEAD tree, so
  a span whose words differ in depth only through DEPS edges may keep a
  different word's UPOS.
  """
  by_id = {w.id: w for w in words}
  heads = {w.id: w.head for w in words}
  replaced: dict[int, _UdWord | None] = {}
  for first, last, form in fused:
    span = [by_id.get(i) for i in range(first, last + 1)]
    if None in span or first >= last:
      raise DataError(f"{where}: multiword token {first}-{last} does not cover words of the "
                      "sentence")
    head = _span_head(span, heads, lang)
    for w in span:
      replaced[w.id] = dataclasses.replace(head, form=form) if w is head else None
  kept = (replaced.get(w.id, w) for w in words)
  return [w for w in kept if w is not None]


def _conllu_blocks(path: Path) -> Iterator[list[tuple[int, list[str]]]]:
  block = []
  for lineno, line in _lines(path):
    if not line.strip():
      if block:
        yield block
      block = []
    elif not line.startswith("#"):
      block.append((lineno, line.split("\t")))
  if block:
    yield block


def _parse_ud_block(path: Path, block: list[tuple[int, list[str]]]
                    ) -> tuple[list[_UdWord], list[tuple[int, int, str]]]:
  words, fused = [], []
  for lineno, fields in block:
    if len(fields) != 10:
      raise DataError(f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns, found "
                      f"{len(fields)}")
    tid = fields[0]
    try:
      if "." in tid:  # empty node of the enhanced graph: not a word
        continue
      if "-" in tid:
        first, last = (int(x) for x in tid.split("-"))
        fused.append((first, last, fields[1]))
      else:
        words.append(_UdWord(int(tid), fields[1], fields[3], int(fields[6])))
    except ValueError as e:
      raise DataError(f"{path}:{lineno}: bad CoNLL-U ID {tid!r} or HEAD {fields[6]!r}") from e
  return words, fused


def _clean_form(form: str) -> str:
  # XTREME's udpos_preprocess `remove_empty_space`: drop ZWNJ and inner spaces.
  return "".join(form.replace("\u200c", "").split(" "))


def read_conllu(path: Path, lang: str) -> list[TagExample]:
  """UPOS-tagged sentences of a CoNLL-U file; `lang` picks the fused-form ranking."""
  out = []
  for block in _conllu_blocks(path):
    words, fused = _parse_ud_block(path, block)
    where = f"{path}:{block[0][0]}"
    if fused:
      words = _fuse(words, fused, lang, where)
    forms = [w.form for w in words]
    # XTREME drops sentences whose words are all (or all but one) "_"
    # (treebanks distributed without their text, e.g. Arabic-NYUAD).
    n_empty = forms.count("_")
    if not words or (n_empty and n_empty >= len(forms) - 1):
      continue
    out.append(TagExample(where, tuple(_clean_form(f) for f in forms),
                          tuple(w.upos for w in words)))
  return out


_SQUAD_SHAPE = ('expected SQuAD v1.1: {"data": [{"title": ..., "paragraphs": [{"context": ..., '
                '"qas": [...]}]}]}')


def _json_kind(value) -> str:
  return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
          type(None): "null"}.get(type(value), "a number")


def _squad_articles(path: Path) -> list:
  """The articles of a SQuAD file: its `data` list (XTREME's evaluate.py `read_squad` also
  accepts the bare list)."""
  raw = path.read_bytes()
  try:
    data = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise _not_utf8(f"{path}:{line}", e) from e
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from e
  if isinstance(data, list):
    return data
  if not isinstance(data, dict):
    raise DataError(f"{path}: the top level is {_json_kind(data)}, not an object; "
                    f"{_SQUAD_SHAPE}")
  if not isinstance(data.get("data"), list):
    raise DataError(f"{path}: the top-level object has no data list; {_SQUAD_SHAPE}")
  return data["data"]


def _squad_paragraph(path: Path, a: int, p: int, article: dict, para: dict) -> list[QAExample]:
  try:
    return [QAExample(str(qa["id"]), qa["question"], para["context"],
                      tuple(Answer(x["text"], int(x["answer_start"])) for x in qa["answers"]),
                      article.get("title", ""))
            for qa in para["qas"]]
  except (KeyError, TypeError, ValueError) as e:
    raise DataError(f"{path}: article {a} paragraph {p}: not SQuAD v1.1 ({e!r}); expected "
                    "context, qas[id, question, answers[text, answer_start]]") from e


def read_squad_json(path: Path) -> list[QAExample]:
  """Questions of a SQuAD v1.1 file, in file order.

  Ids are not checked for uniqueness here: XTREME's TyDi QA train file reuses
  them (its preprocessing keeps only the last part of each id); evaluation
  (`metrics.qa_scores`) requires unique ids.
  """
  out = []
  for a, article in enumerate(_squad_articles(path)):
    if not isinstance(article, dict):
      raise DataError(f"{path}: article {a} is {_json_kind(article)}, not an object; "
                      f"{_SQUAD_SHAPE}")
    paragraphs = article.get("paragraphs", [])
    if not isinstance(paragraphs, list):
      raise DataError(f"{path}: article {a}: paragraphs is {_json_kind(paragraphs)}, not a "
                      f"list; {_SQUAD_SHAPE}")
    for p, para in enumerate(paragraphs):
      out.extend(_squad_paragraph(path, a, p, article, para))
  if not out:
    raise DataError(f"{path}: no questions found; {_SQUAD_SHAPE}")
  return out


def read_tatoeba(path: Path, english_path: Path) -> TatoebaSet:
  """Line-aligned Tatoeba sentences (stripped as XTREME's `tokenize_text`)."""
  source = tuple(line.strip() for _, line in _lines(path))
  english = tuple(line.strip() for _, line in _lines(english_path))
  if len(source) != len(english):
    raise DataError(f"{path} has {len(source)} lines but {english_path} has {len(english)}; "
                    "Tatoeba files must be line-aligned")
  if len(english) >= _SORTED_CHECK_MIN_LINES and list(english) == sorted(english):
    raise DataError(f"{english_path} is sorted: XTREME's download script shuffles the English "
                    "side and hides the alignment; use LASER's tatoeba.<xxx>-eng.* files")
  return TatoebaSet(source, english)


def _read_id_sentences(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
  ids, sentences = [], []
  for lineno, line in _lines(path):
    if not line:
      continue
    sid, tab, sentence = line.partition("\t")
    if not tab or not sid.strip():
      raise DataError(f"{path}:{lineno}: expected 'id<TAB>sentence', found {line!r}")
    ids.append(sid.strip())
    sentences.append(sentence.strip())
  return tuple(ids), tuple(sentences)


def read_bucc(path: Path, english_path: Path, gold_path: Path) -> BuccSet:
  """BUCC 2018 sentences of both sides and the gold pairs (ids checked)."""
  source_ids, source = _read_id_sentences(path)
  english_ids, english = _read_id_sentences(english_path)
  known_src, known_en = set(source_ids), set(english_ids)
  gold = set()
  for lineno, line in _lines(gold_path):
    if not line:
      continue
    fields = line.split("\t")
    if len(fields) != 2:
      raise DataError(f"{gold_path}:{lineno}: expected 'source_id<TAB>english_id', found "
                      f"{line!r}")
    src, en = (f.strip() for f in fields)
    if src not in known_src or en not in known_en:
      raise DataError(f"{gold_path}:{lineno}: pair ({src}, {en}) names a sentence that is not "
                      f"in {path} or {english_path}")
    gold.add((src, en))
  return BuccSet(source_ids, source, english_ids, english, frozenset(gold))


FileReader = Callable[[tasks.DataFile, str, Sequence[str]], Examples]  # (file, lang, labels)

FILE_READERS: dict[str, FileReader] = {  # FileLayout.fmt -> reader
    "pair_tsv": lambda f, lang, labels: read_pair_tsv(f.path, labels),
    "pawsx_tsv": lambda f, lang, labels: read_pair_tsv(f.path, labels, drop_placeholders=True),
    "tag_text": lambda f, lang, labels: read_tag_text(f.path),
    "conllu": lambda f, lang, labels: read_conllu(f.path, lang),
    "squad_json": lambda f, lang, labels: read_squad_json(f.path),
    "tatoeba_text": lambda f, lang, labels: read_tatoeba(f.path, *f.partners),
    "bucc_text": lambda f, lang, labels: read_bucc(f.path, *f.partners),
}


def register_file_format(fmt: str, reader: FileReader) -> None:
  """Adds a benchmark's file format (its module registers it when imported)."""
  if FILE_READERS.get(fmt, reader) is not reader:
    raise ConfigError(f"file format {fmt!r} is registered twice; give the new one another name")
  FILE_READERS[fmt] = reader


def _read_file(fmt: str, f: tasks.DataFile, lang: str, labels: Sequence[str]):
  if fmt not in FILE_READERS:
    raise DataError(f"{f.path}: no reader for format {fmt!r}; known: {', '.join(FILE_READERS)}")
  return FILE_READERS[fmt](f, lang, labels)


def load(data: tasks.TaskData, lang: str, split: str) -> Examples:
  """The examples of one (language, split) of a discovered task.

  Examples of several files (UD treebanks of one language) are concatenated;
  retrieval tasks give one `TatoebaSet`, `BuccSet` or `RetrievalSet`.
  """
  source = data.source(lang, split)
  if isinstance(source, tasks.TfdsSource):
    return load_tfds(source, data.spec.labels)
  parts = [_read_file(source.fmt, f, lang, data.spec.labels) for f in source.files]
  if data.spec.task_type == "retrieval":
    if len(parts) != 1:
      raise DataError(f"{data.spec.name} {lang}/{split}: several files match "
                      f"({', '.join(str(f.path) for f in source.files)}); keep one")
    return parts[0]
  return [ex for part in parts for ex in part]


# ---- TFDS builders (TensorFlow imported here only) ----

def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _tfds_rows(source: tasks.TfdsSource):
  """(builder, numpy examples) of a prepared TFDS split."""
  from polyglot import _env  # pylint: disable=g-import-not-at-top
  _env.import_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(source.builder, data_dir=source.data_dir)
  except ValueError as e:
    raise DataError(f"TFDS builder {source.builder!r} is unknown to tensorflow_datasets "
                    f"{tfds.__version__}: {str(e).splitlines()[0]}") from e
  try:
    ds = builder.as_dataset(split=source.split, shuffle_files=False)
  except AssertionError as e:
    raise DataError(f"TFDS {source.builder} has no prepared data in {source.data_dir}; prepare "
                    f"it with `tfds build {source.builder} --data_dir={source.data_dir}`") from e
  return builder, tfds.as_numpy(ds)


def _class_names(builder, key: str) -> list[str]:
  feature = builder.info.features[key]
  return list(getattr(feature, "feature", feature).names)


def _tfds_xnli(builder, rows, lang: str, guid: str) -> list[PairExample]:
  # premise: Translation {lang: text}; hypothesis: TranslationVariableLanguages
  # {language: [...], translation: [...]}.
  names = _class_names(builder, "label")
  out = []
  for i, ex in enumerate(rows):
    hyp_langs = [_text(x) for x in ex["hypothesis"]["language"]]
    if lang not in hyp_langs or lang not in ex["premise"]:
      raise DataError(f"{guid}:{i}: no {lang!r} text in this XNLI example")
    hyp = _text(ex["hypothesis"]["translation"][hyp_langs.index(lang)])
    out.append(PairExample(f"{guid}:{i}", _text(ex["premise"][lang]), hyp,
                           names[int(ex["label"])]))
  return out


def _tfds_pair(rows, guid: str) -> list[PairExample]:
  # paws_x_wiki labels: 0 different_meaning, 1 paraphrase = XTREME's "0"/"1".
  return [PairExample(f"{guid}:{i}", _text(ex["sentence1"]), _text(ex["sentence2"]),
                      str(int(ex["label"]))) for i, ex in enumerate(rows)]


def _tfds_tags(builder, rows, key: str, guid: str) -> list[TagExample]:
  names = _class_names(builder, key)
  out = []
  for i, ex in enumerate(rows):
    words = tuple(_text(t) for t in ex["tokens"])
    tags = tuple(names[int(t)] for t in ex[key])
    if len(words) != len(tags):
      raise DataError(f"{guid}:{i}: {len(words)} tokens but {len(tags)} {key} tags")
    out.append(TagExample(f"{guid}:{i}", words, tags))
  return out


def _tfds_squad(rows, id_prefix: str) -> list[QAExample]:
  out = []
  for ex in rows:
    qid = _text(ex["id"])
    if not qid.startswith(id_prefix):
      continue
    answers = tuple(Answer(_text(t), int(s)) for t, s in
                    zip(ex["answers"]["text"], ex["answers"]["answer_start"]))
    out.append(QAExample(qid, _text(ex["question"]), _text(ex["context"]), answers,
                         _text(ex["title"])))
  return out


def _tfds_bucc(rows) -> BuccSet:
  """The TFDS `bucc` builder holds only the gold pairs, not the distractor
  sentences of BUCC's pools, so mining on it is easier than on the files."""
  pairs = [(_text(ex["source_id"]), _text(ex["source_sentence"]), _text(ex["target_id"]),
            _text(ex["target_sentence"])) for ex in rows]
  src = dict((p[0], p[1]) for p in pairs)
  en = dict((p[2], p[3]) for p in pairs)
  return BuccSet(tuple(src), tuple(src.values()), tuple(en), tuple(en.values()),
                 frozenset((p[0], p[2]) for p in pairs))


def load_tfds(source: tasks.TfdsSource, labels: Sequence[str] = ()) -> Examples:
  """Examples of one TFDS split, converted to this module's dataclasses."""
  builder, rows = _tfds_rows(source)
  guid = f"tfds:{source.builder}/{source.split}"
  if source.fmt in ("tfds_xnli", "tfds_pair"):
    out = (_tfds_xnli(builder, rows, source.lang, guid) if source.fmt == "tfds_xnli"
           else _tfds_pair(rows, guid))
    bad = [ex for ex in out if labels and ex.label not in labels]
    if bad:
      raise DataError(f"{bad[0].guid}: label {bad[0].label!r} is not one of {tuple(labels)}")
    return out
  if source.fmt in ("tfds_upos", "tfds_wikiann"):
    return _tfds_tags(builder, rows, "upos" if source.fmt == "tfds_upos" else "tags", guid)
  if source.fmt == "tfds_squad":
    return _tfds_squad(rows, source.id_prefix)
  if source.fmt == "tfds_tatoeba":
    pairs = [(_text(ex["source_sentence"]).strip(), _text(ex["target_sentence"]).strip())
             for ex in rows]
    return TatoebaSet(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
  if source.fmt == "tfds_bucc":
    return _tfds_bucc(rows)
  raise DataError(f"{guid}: no reader for format {source.fmt!r}; known: {tasks.TFDS_FORMATS}")
