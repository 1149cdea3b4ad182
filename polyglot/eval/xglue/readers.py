"""Readers: the files of XGLUE's `xglue_full_dataset` into frozen examples.

XGLUE (Liang et al., 2020; github.com/microsoft/XGLUE). Formats from its
`Data_Format.txt`, checked against the official scorer
(`evaluation/xglue_evaluate.py`), the baseline's processors (microsoft/Unicoder,
`understanding/src/transformers/data/processors/xglue.py`) and the Hugging Face
`xglue` loader:

| task | files (under `xglue_full_dataset/`) | a line | reader |
|---|---|---|---|
| NC | `NC/xglue.nc.{en.train,<l>.dev,<l>.test}` | title, body, category | `read_nc` |
| QADSM | `QADSM/xglue.qadsm.*` | query, ad title, ad description, Good/Bad | `read_qadsm` |
| WPR | `WPR/xglue.wpr.*` | query, page title, page snippet, 0-4 | `read_wpr` |
| QAM | `QAM/xglue.qam.*` | question, passage, 0/1 | `read_qam` |
| XNLI | `XNLI/multinli.train.en.tsv`, `XNLI/<l>.{dev,test}` | premise, hypothesis, label | `read_xnli` |
| PAWS-X | `PAWSX/en/train.tsv`, `PAWSX/<l>/{dev,test}_2k.tsv` | id, sentence1, sentence2, 0/1 | `read_pawsx` |
| NER, POS | `{NER,POS}/{en.train,<l>.dev,<l>.test}` | `word label` | `read_tagged` |
| MLQA | `MLQA/squad1.1/train-v1.1.json`, `MLQA/MLQA_V1/<split>/<split>-context-<l>-question-<l>.json` | SQuAD v1.1 | XTREME's `read_squad_json` |

Columns are tab-separated (NER/POS: one `word label` per line, a blank line
between sentences). Data_Format.txt shows the test files of NC, QADSM, WPR and
QAM without their label column; such a file is read whole as unlabelled, its
examples' label None. Every line of NC, QADSM, WPR, QAM and XNLI is one
example, since the scorer pairs line i of the prediction file with line i of the
gold file: a blank line there is an error, not a separator. Texts are kept as
written; a label is stripped (the scorer's `split("\\t")[-1].strip()`). A
malformed line, a label outside the task's set, or a file without examples
raises `DataError` naming the file (and line).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from polyglot.errors import DataError
from polyglot.eval.readers import PairExample, RankExample, TagExample, _lines, read_tag_text
from polyglot.eval.xtreme.tasks import PAWSX_LABELS, UPOS_LABELS, XNLI_LABELS
from polyglot.paths import Path

# Label sets in the order of the baseline's `get_labels` (Unicoder's processors;
# NER and POS in Data_Format.txt's order, the baseline reads them from
# `labels.txt`). XNLI, PAWS-X and POS have XTREME's sets, in the same order.
NC_LABELS = ("foodanddrink", "sports", "news", "entertainment", "health", "video", "finance",
             "travel", "lifestyle", "autos")
QADSM_LABELS = ("Bad", "Good")
QAM_LABELS = ("0", "1")
WPR_LABELS = ("0", "1", "2", "3", "4")  # bad, fair, good, excellent, perfect
NER_LABELS = ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O")
POS_LABELS = UPOS_LABELS

_PAWSX_HEADER = "id\tsentence1\tsentence2\tlabel"
# XNLI-MT's `multinli.train.en.tsv` starts with the header `premise\thypo\tlabel`
# and writes "contradictory" where XNLI writes "contradiction" (Unicoder's
# XnliProcessor and the Hugging Face loader map it).
_XNLI_HEADER_LABEL = "label"
_XNLI_SYNONYMS = {"contradictory": "contradiction"}


def _columns_error(path: Path, lineno: int, columns: Sequence[str], found: int,
                   label_optional: bool) -> DataError:
  also = f", or {len(columns) - 1} in an unlabelled test file" if label_optional else ""
  return DataError(f"{path}:{lineno}: expected {len(columns)} tab-separated fields "
                   f"({', '.join(columns)}){also}, found {found}")


def _rows(path: Path, columns: Sequence[str], labels: Sequence[str], *,
          label_optional: bool = False, header_label: str | None = None
          ) -> Iterator[tuple[int, list[str], str | None]]:
  """(line number, text fields, label or None) of each line.

  A labelled line has `len(columns)` fields, the label last; with
  `label_optional`, a file whose first line has one field fewer is unlabelled
  and every line of it must have as many. A first line whose last field is
  `header_label` is a header.
  """
  widths = (len(columns), len(columns) - 1) if label_optional else (len(columns),)
  width = None
  for lineno, line in _lines(path):
    fields = line.split("\t")
    if lineno == 1 and header_label is not None and fields[-1].strip() == header_label:
      continue
    if len(fields) not in widths:
      raise _columns_error(path, lineno, columns, len(fields), label_optional)
    if width is None:
      width, width_line = len(fields), lineno
    elif len(fields) != width:
      raise DataError(f"{path}:{lineno}: {len(fields)} tab-separated fields, but line "
                      f"{width_line} has {width}; every line needs the same columns "
                      f"({', '.join(columns)})")
    if width < len(columns):
      yield lineno, fields, None
      continue
    label = fields[-1].strip()
    if label not in labels:
      raise DataError(f"{path}:{lineno}: label {label!r} is not one of {tuple(labels)}")
    yield lineno, fields[:-1], label


def _nonempty(path: Path, examples: list, shape: str) -> list:
  if not examples:
    raise DataError(f"{path}: no examples; expected {shape}")
  return examples


def read_nc(path: Path) -> list[PairExample]:
  """News classification: (news title, news body) and the category.

  Data_Format.txt lists a leading query column for NC; the baseline's
  NcProcessor, the Hugging Face loader and its dataset card read three.
  """
  columns = ("news title", "news body", "news category")
  out = [PairExample(f"{path}:{n}", *texts, label) for n, texts, label in
         _rows(path, columns, NC_LABELS, label_optional=True)]
  return _nonempty(path, out, "lines of " + "<TAB>".join(columns))


def read_qam(path: Path) -> list[PairExample]:
  """QA matching: (question, passage) and whether the passage answers it ("1") or not ("0")."""
  columns = ("question", "answer passage", "label")
  out = [PairExample(f"{path}:{n}", *texts, label) for n, texts, label in
         _rows(path, columns, QAM_LABELS, label_optional=True)]
  return _nonempty(path, out, "lines of " + "<TAB>".join(columns))


def read_qadsm(path: Path) -> list[PairExample]:
  """Query-ad matching: (query, ad title + " " + ad description) and Good or Bad.

  Title and description are joined by a space, as the baseline's QadsmProcessor does.
  """
  columns = ("query", "ad title", "ad description", "relevance label")
  out = [PairExample(f"{path}:{n}", query, f"{title} {description}", label)
         for n, (query, title, description), label in
         _rows(path, columns, QADSM_LABELS, label_optional=True)]
  return _nonempty(path, out, "lines of " + "<TAB>".join(columns))


def query_ids(queries: Sequence[str]) -> list[int]:
  """The scorer's query of each line: a new id wherever the query differs from
  the line before, so queries are runs of adjacent lines.

  As `load_data` in xglue_evaluate.py, a line after an empty query stays in
  that query's group.
  """
  out, current, last = [], 0, ""
  for query in queries:
    if query != last and last:
      current += 1
    out.append(current)
    last = query
  return out


def read_wpr(path: Path) -> list[RankExample]:
  """Web page ranking: a query, one page (title + " " + snippet) and its relevance 0-4."""
  columns = ("query", "web page title", "web page snippet", "relevance label")
  rows = list(_rows(path, columns, WPR_LABELS, label_optional=True))
  ids = query_ids([texts[0] for _, texts, _ in rows])
  out = [RankExample(f"{path}:{n}", qid, query, f"{title} {snippet}", label)
         for qid, (n, (query, title, snippet), label) in zip(ids, rows)]
  return _nonempty(path, out, "lines of " + "<TAB>".join(columns))


def read_xnli(path: Path) -> list[PairExample]:
  """XNLI pairs: `multinli.train.en.tsv` (XNLI-MT, with its header) or `<lang>.dev`/`<lang>.test`.

  A first line whose label field is "label" is a header; "contradictory" reads
  as "contradiction".
  """
  columns = ("premise", "hypothesis", "label")
  labels = (*XNLI_LABELS, *_XNLI_SYNONYMS)
  out = [PairExample(f"{path}:{n}", *texts, _XNLI_SYNONYMS.get(label, label))
         for n, texts, label in _rows(path, columns, labels, header_label=_XNLI_HEADER_LABEL)]
  return _nonempty(path, out, "lines of " + "<TAB>".join(columns))


def read_pawsx(path: Path) -> list[PairExample]:
  """PAWS-X as released with PAWS-X (`id\\tsentence1\\tsentence2\\tlabel` header).

  Blank lines are skipped and every other row is kept, "NS" placeholders
  included: the scorer reads one prediction per non-blank row.
  """
  lines = _lines(path)
  lineno, header = next(lines, (1, ""))
  if header.strip() != _PAWSX_HEADER:
    raise DataError(f"{path}:{lineno}: expected the PAWS-X header {_PAWSX_HEADER!r}, found "
                    f"{header[:80]!r}")
  out = []
  for lineno, line in lines:
    if not line.strip():
      continue
    fields = line.split("\t")
    if len(fields) != 4:
      raise DataError(f"{path}:{lineno}: expected 4 tab-separated fields (id, sentence1, "
                      f"sentence2, label), found {len(fields)}")
    label = fields[3].strip()
    if label not in PAWSX_LABELS:
      raise DataError(f"{path}:{lineno}: label {label!r} is not one of {PAWSX_LABELS}")
    out.append(PairExample(f"{path}:{lineno}", fields[1], fields[2], label))
  return _nonempty(path, out, f"rows after the header {_PAWSX_HEADER!r}")


def read_tagged(path: Path, labels: Sequence[str]) -> list[TagExample]:
  """NER or POS sentences (`word label` per line, as XTREME's `read_tag_text`),
  every label checked against `labels` (`NER_LABELS`, `POS_LABELS`)."""
  out = read_tag_text(path)
  for lineno, line in _lines(path):
    if line.strip() and not line.startswith("-DOCSTART-"):
      tag = line.split()[-1]  # the scorer's `item.split()[-1]`
      if tag not in labels:
        raise DataError(f"{path}:{lineno}: label {tag!r} is not one of {tuple(labels)}")
  return _nonempty(path, out, "'word label' lines, a blank line between sentences")
