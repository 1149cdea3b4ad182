"""Tasks, benchmarks, and the discovery of each task's data.

A `TaskSpec` says what a task is (type, metric, label set, the benchmark's
languages) and where its data can live; a `Benchmark` is a table of them with
its settings file and its averaging (`polyglot.eval.benchmarks`, which
registers them by name; XTREME's table: `polyglot.eval.xtreme.tasks`).

A `FileLayout` is a regular expression over a file's path relative to the task
folder; its named groups give the language and the split. Files are recognised
by name alone, never renamed or copied. Several files for one (language, split)
in one layout are concatenated (UD treebanks of one language, as XTREME's
`utils_preprocess.py` does); the same (language, split) in two layouts is an
error. Alternatively a task reads from TFDS builders
(`discover(..., tfds_data_dir=...)`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from polyglot import paths
from polyglot.paths import Path

from polyglot.errors import ConfigError, DataError

SPLITS = ("train", "dev", "test")
# The split of a first fine-tuning stage, before `train` (an intermediate task: XTREME-R
# fine-tunes on SIQA before COPA); English, like `train`.
INTERMEDIATE = "intermediate"
TASK_TYPES = ("classification", "tagging", "qa", "multiple_choice", "retrieval")
METRICS = ("accuracy", "seqeval_f1", "squad", "mlqa", "bucc_f1", "ndcg", "map_at_20")
TFDS_FORMATS = ("tfds_xnli", "tfds_pair", "tfds_upos", "tfds_wikiann", "tfds_squad",
                "tfds_tatoeba", "tfds_bucc")
ANY_DIR = r"(?:.*/)?"  # a FileLayout pattern's optional leading folders
LANG = r"(?P<lang>[a-z]{2,3})"  # a FileLayout pattern's language code


@dataclasses.dataclass(frozen=True)
class FileLayout:
  """One way a task's files are named.

  `pattern` must match the whole path relative to `folder` (posix separators).
  The language comes from the `lang` group or `lang`; the split from the
  `split` group or `split`. `partners` are `re.Match.expand` templates of
  companion files (Tatoeba's English side; BUCC's English side and gold).
  `fmt` names a reader in `readers.FILE_READERS`. `lang_codes` maps the codes
  of file names to the benchmark's (LASER's ISO 639-3 to XTREME's 639-1).
  """
  folder: str
  pattern: str
  fmt: str
  lang: str | None = None
  split: str | None = None
  partners: tuple[str, ...] = ()
  lang_codes: Mapping[str, str] | None = None

  def __post_init__(self):
    groups = re.compile(self.pattern).groupindex
    if ("lang" in groups) == (self.lang is not None):
      raise ConfigError(f"FileLayout {self.pattern!r}: give the language by a `lang` group "
                        "or by `lang`, not both or neither")
    if ("split" in groups) == (self.split is not None):
      raise ConfigError(f"FileLayout {self.pattern!r}: give the split by a `split` group "
                        "or by `split`, not both or neither")

  def match(self, relpath: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(lang, split, partner relpaths) for a path relative to `folder`, or None."""
    m = re.fullmatch(self.pattern, relpath)
    if m is None:
      return None
    lang = self.lang or m.group("lang")
    if self.lang_codes:
      lang = self.lang_codes.get(lang, lang)
    return lang, self.split or m.group("split"), tuple(m.expand(t) for t in self.partners)


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """One split of a task in a TFDS builder; `{lang}` in `builder`/`split` is filled in.

  `lang` fixes the language (the English training splits); `id_prefix` keeps
  only examples whose id starts with it (TyDi QA's multilingual train split).
  """
  builder: str
  split: str
  fmt: str
  lang: str | None = None
  id_prefix: str = ""

  def __post_init__(self):
    if self.fmt not in TFDS_FORMATS:
      raise ConfigError(f"TfdsSplit.fmt={self.fmt!r} is invalid: use one of {TFDS_FORMATS}")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task: type, metric, labels, the benchmark's languages, data layouts.

  `headline` names the metrics whose mean is the task's one score (`report.headline`);
  empty: the metric's usual one (accuracy; F1; the mean of exact match and F1 for QA).
  `ndcg` ranks a classification task's examples by expected label value (labels
  are relevance grades) within each `RankExample.query_id`.
  """
  name: str
  task_type: str
  metric: str
  languages: tuple[str, ...]
  layouts: tuple[FileLayout, ...]
  tfds: Mapping[str, TfdsSplit]
  labels: tuple[str, ...] = ()
  train_language: str = "en"
  headline: tuple[str, ...] = ()

  def __post_init__(self):
    if self.task_type not in TASK_TYPES:
      raise ConfigError(f"TaskSpec {self.name}: task_type={self.task_type!r} is invalid: "
                        f"use one of {TASK_TYPES}")
    if self.metric not in METRICS:
      raise ConfigError(f"TaskSpec {self.name}: metric={self.metric!r} is invalid: "
                        f"use one of {METRICS}")
    if self.metric == "ndcg" and self.task_type != "classification":
      raise ConfigError(f"TaskSpec {self.name}: metric 'ndcg' ranks by a classification "
                        f"head's grades, not a {self.task_type} task's outputs")
    if set(self.tfds) - set(SPLITS):
      raise ConfigError(f"TaskSpec {self.name}: tfds splits {sorted(self.tfds)} must be in "
                        f"{SPLITS}")

  @property
  def fine_tuned(self) -> bool:
    """Retrieval uses the pretrained encoder as is (XTREME section 4)."""
    return self.task_type != "retrieval"


@dataclasses.dataclass(frozen=True)
class DataFile:
  """One matched file and its companion files."""
  path: Path
  partners: tuple[Path, ...] = ()


@dataclasses.dataclass(frozen=True)
class FileSource:
  """A (language, split) read from files, concatenated in order."""
  fmt: str
  lang: str
  files: tuple[DataFile, ...]


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A (language, split) read from a TFDS builder prepared under `data_dir`."""
  fmt: str
  lang: str
  builder: str
  split: str
  data_dir: str
  id_prefix: str = ""


Source = FileSource | TfdsSource


@dataclasses.dataclass(frozen=True)
class TaskData:
  """What was found for one task: a source per (language, split)."""
  spec: TaskSpec
  root: str
  sources: Mapping[tuple[str, str], Source]
  incomplete: tuple[str, ...] = ()  # matched files whose companion files are absent

  def languages(self, split: str | None = None) -> tuple[str, ...]:
    return tuple(sorted({lang for lang, s in self.sources if split is None or s == split}))

  def has(self, lang: str, split: str) -> bool:
    return (lang, split) in self.sources

  def eval_split(self, lang: str) -> str | None:
    """Test sets are scored; where labelled test data is absent (TyDi QA GoldP,
    the shared dev-only copies) the dev set is the evaluation set."""
    return next((s for s in ("test", "dev") if self.has(lang, s)), None)

  def source(self, lang: str, split: str) -> Source:
    if not self.has(lang, split):
      found = ", ".join(f"{lg}/{s}" for lg, s in sorted(self.sources)) or "nothing"
      raise DataError(f"{self.spec.name}: no {split} data for language {lang!r} under "
                      f"{self.root}; found: {found}")
    return self.sources[(lang, split)]


def discover_files(spec: TaskSpec, data_dir: str | os.PathLike) -> TaskData:
  """Finds every (language, split) of `spec` under `data_dir` by file name."""
  root = Path(paths.resolve(data_dir))
  if not root.is_dir():
    raise DataError(f"data dir {root} does not exist; pass --data_dir=<folder with the task "
                    "folders (xnli/, udpos/, ...)>")
  found: dict[tuple[str, str], tuple[int, list[DataFile]]] = {}
  incomplete = []
  for index, layout in enumerate(spec.layouts):
    folder = root / layout.folder
    for path in paths.files_under(folder):
      hit = layout.match(path.relative_to(folder).as_posix())
      if hit is None:
        continue
      lang, split, partner_rel = hit
      partners = tuple(folder / p for p in partner_rel)
      absent = [str(p) for p in partners if not p.is_file()]
      if absent:
        incomplete.append(f"{path} lacks {', '.join(absent)}")
        continue
      owner, files = found.setdefault((lang, split), (index, []))
      if owner != index:
        raise DataError(f"{spec.name} {lang}/{split} is in two layouts: {files[0].path} and "
                        f"{path}; keep one of them in {root}")
      files.append(DataFile(path, partners))
  sources = {key: FileSource(spec.layouts[i].fmt, key[0], tuple(files))
             for key, (i, files) in found.items()}
  return TaskData(spec, str(root), sources, tuple(incomplete))


def discover_tfds(spec: TaskSpec, tfds_data_dir: str | os.PathLike) -> TaskData:
  """Sources for `spec` from TFDS builders (the benchmark's languages; read lazily)."""
  sources = {}
  for split, t in spec.tfds.items():
    for lang in ((t.lang,) if t.lang else spec.languages):
      sources[(lang, split)] = TfdsSource(
          t.fmt, lang, t.builder.format(lang=lang), t.split.format(lang=lang),
          paths.resolve(tfds_data_dir), t.id_prefix)
  return TaskData(spec, paths.resolve(tfds_data_dir), sources)


def discover(spec: TaskSpec, data_dir: str | os.PathLike | None = None,
             tfds_data_dir: str | os.PathLike | None = None) -> TaskData:
  """Files under `data_dir`, or TFDS builders under `tfds_data_dir` (exactly one)."""
  if (data_dir is None) == (tfds_data_dir is None):
    raise ConfigError("give exactly one of data_dir (the task files) and "
                      "tfds_data_dir (prepared TFDS builders)")
  if tfds_data_dir is not None:
    return discover_tfds(spec, tfds_data_dir)
  return discover_files(spec, data_dir)


def _source_files(source: Source) -> list[Path]:
  """The files a source reads; for TFDS, the builder's `dataset_info.json` files, which
  every preparation rewrites (split sizes, shard lengths), not its record shards."""
  if isinstance(source, FileSource):
    return [p for f in source.files for p in (f.path, *f.partners)]
  builder = Path(source.data_dir) / source.builder
  return [p for p in paths.files_under(builder) if p.name == "dataset_info.json"]


def _file_digest(path: Path) -> bytes:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.digest()


def fingerprint(data: TaskData, keys: Iterable[tuple[str, str]]) -> str:
  """sha256 (hex) of what the (language, split) `keys` of `data` read: each file's name
  (relative to the data root) and bytes, and for TFDS the builder and split too. Keys a
  run's caches on the data itself, so that a file replaced in place is noticed."""
  digest = hashlib.sha256()
  root = data.root.rstrip("/") + "/"
  for lang, split in sorted(set(keys)):
    source = data.source(lang, split)
    where = (source.builder, source.split, source.id_prefix) if isinstance(
        source, TfdsSource) else ()
    digest.update(repr((lang, split, source.fmt, *where)).encode() + b"\0")
    for path in _source_files(source):
      name = os.fspath(path)
      digest.update(name.removeprefix(root).encode() + b"\0" + _file_digest(path))
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Missing:
  """Something a run asked for that the data does not have."""
  task: str
  what: str  # "task", "train", "eval" or "files"
  languages: tuple[str, ...] = ()
  detail: str = ""

  def __str__(self) -> str:
    langs = f" ({', '.join(self.languages)})" if self.languages else ""
    return f"{self.task}: {self.what} missing{langs}: {self.detail}"


def missing(data: TaskData, languages: Sequence[str] | None = None) -> tuple[Missing, ...]:
  """What `data` lacks for a run over `languages` (default: the benchmark's languages)."""
  spec = data.spec
  if not data.sources:
    folders = sorted({lay.folder for lay in spec.layouts})
    return (Missing(spec.name, "task", (), f"nothing found under {data.root} in "
                                           f"{', '.join(folders)}"),)
  out = []
  en = spec.train_language
  if spec.fine_tuned and not data.has(en, "train"):
    out.append(Missing(spec.name, "train", (en,), "no fine-tuning data"))
  if (any(lay.split == INTERMEDIATE for lay in spec.layouts)
      and not data.has(en, INTERMEDIATE)):
    folders = sorted({lay.folder for lay in spec.layouts if lay.split == INTERMEDIATE})
    out.append(Missing(spec.name, INTERMEDIATE, (en,), f"nothing in {', '.join(folders)}/: "
                       "fine-tuned on its own training data alone"))
  wanted = spec.languages if languages is None else tuple(languages)
  absent = tuple(lang for lang in wanted if data.eval_split(lang) is None)
  if absent:
    out.append(Missing(spec.name, "eval", absent, "no dev or test set"))
  if data.incomplete:
    out.append(Missing(spec.name, "files", (), "; ".join(data.incomplete)))
  return tuple(out)
