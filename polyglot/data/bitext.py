"""Readers of aligned text: sentence pairs that translate each other.

Pure Python (no TensorFlow), so evaluations can read the same files as the
training tasks. Three layouts:

- id-joined (`read_id_tsv`, `join_on_ids`): one file per language, one line
  per segment, `id<TAB>text` (the bible corpus: `b.MAT.1.1<TAB>Yesu ...`).
  Ids are the alignment: two files' lines with the same id translate each
  other, whatever their line numbers.
- line-aligned (`read_line_aligned`): two files, Moses/OPUS style
  (`en-sw.en`, `en-sw.sw`); line i of one translates line i of the other.
- pair TSV (`read_tsv_pairs`): one file, `source<TAB>target` per line.

Every path may be local (relative or absolute) or a URL (`gs://...`), read
through `polyglot.paths`. A line loses its end of line (`\\n`, `\\r\\n`) and
nothing else: inner and edge spaces are kept. A text that is empty or only
whitespace is an error, as is a line that is not UTF-8, a file with no lines,
a wrong number of tabs: each a one-line `DataError` naming `file:line`.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from polyglot import paths
from polyglot.errors import DataError

_BOOK = "[0-9A-Z]+"  # MAT, 1CO
_VERSE_ID = re.compile(rf"^b\.({_BOOK})\.[0-9]+\.[0-9]+$")  # b.<BOOK>.<chapter>.<verse>


def _open(path: paths.PathLike):
  return paths.Path(paths.resolve(path)).open("rb")


def _decode(raw: bytes, where: str) -> str:
  """`raw` as text without its end of line; a DataError at `where` (`file:line`) if not UTF-8."""
  try:
    return raw.decode("utf-8").rstrip("\r\n")
  except UnicodeDecodeError as e:
    raise DataError(f"{where}: bytes are not UTF-8 ({e.reason} at byte {e.start}): re-encode "
                    "the file, e.g. iconv -f <encoding> -t UTF-8") from None


def iter_lines(path: paths.PathLike) -> Iterator[tuple[str, str]]:
  """(`file:line`, text) of each line of the UTF-8 file `path`, streamed; a DataError if empty."""
  name = paths.resolve(path)
  lineno = 0
  with _open(path) as f:
    for lineno, raw in enumerate(f, 1):
      yield f"{name}:{lineno}", _decode(raw, f"{name}:{lineno}")
  if not lineno:
    raise DataError(f"{name}: the file is empty: fill it or remove it")


def _check_text(text: str, where: str, what: str) -> str:
  if not text.strip():
    raise DataError(f"{where}: empty {what}: every line needs text; remove the line (from both "
                    "files if they are line-aligned)")
  return text


def _fields(line: str, where: str, layout: str) -> tuple[str, str]:
  """The two tab-separated fields of `line` (layout e.g. 'id<TAB>text', for the error)."""
  fields = line.split("\t")
  if len(fields) != 2:
    raise DataError(f"{where}: expected '{layout}' (1 tab), found {len(fields) - 1} tabs in "
                    f"{line[:60]!r}")
  return fields[0], fields[1]


def read_id_tsv(path: paths.PathLike) -> dict[str, str]:
  """id -> text of an `id<TAB>text` file, in file order."""
  out: dict[str, str] = {}
  first_seen: dict[str, str] = {}  # id -> `file:line`
  for where, line in iter_lines(path):
    key, text = _fields(line, where, "id<TAB>text")
    if not key.strip():
      raise DataError(f"{where}: missing id before the tab: write 'id<TAB>text'")
    if key in out:
        raise DataError(f"{where}: duplicate id {key!r} (first at {first_seen[key]}): keep one "
                      "line per id")
    out[key] = _check_text(text, where, "text")
    first_seen[key] = where
  return out


def join_on_ids(a: dict[str, str], b: dict[str, str]) -> list[tuple[str, str, str]]:
  """(id, a's text, b's text) for the ids in both, in `a`'s order."""
  return [(key, text, b[key]) for key, text in a.items() if key in b]


def verse_book(verse_id: str) -> str:
  """The book of a verse id: `b.MAT.1.1` -> `MAT`."""
  match = _VERSE_ID.match(verse_id)
  if not match:
    raise DataError(f"verse id {verse_id!r} is not of the form b.<BOOK>.<chapter>.<verse> "
                    "(e.g. b.MAT.1.1)")
  return match.group(1)


def is_book(book: str) -> bool:
  """Whether `book` can be the book of a verse id (`MAT`, `1CO`)."""
  return re.fullmatch(_BOOK, book) is not None


def iter_line_aligned(path_a: paths.PathLike, path_b: paths.PathLike
                      ) -> Iterator[tuple[str, str, str]]:
  """(`file_a:line`, text a, text b) for each line pair of two line-aligned files, streamed.

  Unequal line counts are found when the shorter file ends; the longer one is then read
  to its end to name both counts.
  """
  lines_a, lines_b = iter_lines(path_a), iter_lines(path_b)
  count = 0
  for count, (line_a, line_b) in enumerate(itertools.zip_longest(lines_a, lines_b), 1):
    if line_a is None or line_b is None:
      count_a = count - 1 + (line_a is not None) + sum(1 for _ in lines_a)
      count_b = count - 1 + (line_b is not None) + sum(1 for _ in lines_b)
      raise DataError(f"line-aligned files differ in length: {paths.resolve(path_a)} has "
                      f"{count_a} lines, {paths.resolve(path_b)} has {count_b}: line i of one "
                      "must translate line i of the other")
    (where_a, text_a), (where_b, text_b) = line_a, line_b
    yield where_a, _check_text(text_a, where_a, "side"), _check_text(text_b, where_b, "side")


def read_line_aligned(path_a: paths.PathLike, path_b: paths.PathLike) -> list[tuple[str, str]]:
  """(line i of `path_a`, line i of `path_b`) for every line (Moses/OPUS layout)."""
  return [(a, b) for _, a, b in iter_line_aligned(path_a, path_b)]


def iter_tsv_pairs(path: paths.PathLike) -> Iterator[tuple[str, str, str]]:
  """(`file:line`, source, target) of each `source<TAB>target` line, streamed."""
  for where, line in iter_lines(path):
    source, target = _fields(line, where, "source<TAB>target")
    yield where, _check_text(source, where, "source side"), _check_text(target, where,
                                                                         "target side")


def read_tsv_pairs(path: paths.PathLike) -> list[tuple[str, str]]:
  """(source, target) of each `source<TAB>target` line."""
  return [(source, target) for _, source, target in iter_tsv_pairs(path)]

