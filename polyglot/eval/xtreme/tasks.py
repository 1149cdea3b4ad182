"""The XTREME task registry and the discovery of each task's data.

One `TaskSpec` per task says what the task is (type, metric, label set, XTREME
languages) and where its data can live. Two on-disk layouts are recognised by
file name alone, never by renaming or copying files:

| task | XTREME `scripts/download_data.sh` | shared-data layout (`../shared/data`) |
|---|---|---|
| xnli, pawsx | `xnli/{split}-{lang}.tsv` | same names (dev only) |
| udpos | `udpos/{split}-{lang}.tsv` | `udpos/{lang}_{treebank}-ud-{split}.conllu` |
| panx | `panx/{split}-{lang}.tsv` | `ner/conll2003_en/{split}.txt`, |
| | | `ner/masakhaner2/{lang}.{split}.txt` |
| xquad | `xquad/xquad.{lang}.json` + `squad/train-v1.1.json` | same |
| mlqa | `mlqa/MLQA_V1/{split}/{split}-context-{lang}-question-{lang}.json` | same file names |
| tydiqa | `tydiqa/*/tydiqa.{lang}.{split}.json` | `tydiqa/tydiqa.goldp.{lang}.{split}.json` |
| bucc2018 | `bucc2018/{lang}-en.{split}.{lang,en,gold}` | same |
| tatoeba | `tatoeba/{lang}-en.{lang,en}` | `tatoeba/tatoeba.{xxx}-eng.{xxx,eng}` (LASER) |

A `FileLayout` is a regular expression over a file's path relative to the task
folder; its named groups give the language and the split. Several files for
one (language, split) in one layout are concatenated (UD treebanks of one
language, as XTREME's `utils_preprocess.py` does); the same (language, split)
in two layouts is an error. Alternatively every task reads from TFDS builders
(`discover(..., tfds_data_dir=...)`).

XTREME's task lists, categories and metrics: `evaluate.py` (TASK2LANGS,
GROUP2TASK, METRIC_FUNCTION) in google-research/xtreme.
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
TASK_TYPES = ("classification", "tagging", "qa", "retrieval")
METRICS = ("accuracy", "seqeval_f1", "squad", "mlqa", "bucc_f1")
FILE_FORMATS = ("pair_tsv", "pawsx_tsv", "tag_text", "conllu", "squad_json", "tatoeba_text",
                "bucc_text")
TFDS_FORMATS = ("tfds_xnli", "tfds_pair", "tfds_upos", "tfds_wikiann", "tfds_squad",
                "tfds_tatoeba", "tfds_bucc")

# LASER's Tatoeba file names use ISO 639-3; XTREME reports ISO 639-1 (the
# `lang3_dict` of XTREME's `third_party/run_retrieval.py`). Other codes are kept.
LASER_TO_XTREME = {
    "afr": "af", "ara": "ar", "ben": "bn", "bul": "bg", "cmn": "zh", "deu": "de", "ell": "el",
    "est": "et", "eus": "eu", "fin": "fi", "fra": "fr", "heb": "he", "hin": "hi", "hun": "hu",
    "ind": "id", "ita": "it", "jav": "jv", "jpn": "ja", "kat": "ka", "kaz": "kk", "kor": "ko",
    "mal": "ml", "mar": "mr", "nld": "nl", "pes": "fa", "por": "pt", "rus": "ru", "spa": "es",
    "swh": "sw", "tam": "ta", "tel": "te", "tgl": "tl", "tha": "th", "tur": "tr", "urd": "ur",
    "vie": "vi",
}

_LANG = r"(?P<lang>[a-z]{2,3})"
_ANY_DIR = r"(?:.*/)?"


@dataclasses.dataclass(frozen=True)
class FileLayout:
  """One way a task's files are named.

  `pattern` must match the whole path relative to `folder` (posix separators).
  The language comes from the `lang` group or `lang`; the split from the
  `split` group or `split`. `partners` are `re.Match.expand` templates of
  companion files (Tatoeba's English side; BUCC's English side and gold).
  """
  folder: str
  pattern: str
  fmt: str
  lang: str | None = None
  split: str | None = None
  partners: tuple[str, ...] = ()
  laser_codes: bool = False  # map LASER's ISO 639-3 codes with LASER_TO_XTREME

  def __post_init__(self):
    groups = re.compile(self.pattern).groupindex
    if self.fmt not in FILE_FORMATS:
      raise ConfigError(f"FileLayout.fmt={self.fmt!r} is invalid: use one of {FILE_FORMATS}")
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
    if self.laser_codes:
      lang = LASER_TO_XTREME.get(lang, lang)
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
  """An XTREME task: type, metric, labels, XTREME's languages, data layouts."""
  name: str
  task_type: str
  metric: str
  languages: tuple[str, ...]
  layouts: tuple[FileLayout, ...]
  tfds: Mapping[str, TfdsSplit]
  labels: tuple[str, ...] = ()
  train_language: str = "en"

  def __post_init__(self):
    if self.task_type not in TASK_TYPES:
      raise ConfigError(f"TaskSpec {self.name}: task_type={self.task_type!r} is invalid: "
                        f"use one of {TASK_TYPES}")
    if self.metric not in METRICS:
      raise ConfigError(f"TaskSpec {self.name}: metric={self.metric!r} is invalid: "
                        f"use one of {METRICS}")
    if set(self.tfds) - set(SPLITS):
      raise ConfigError(f"TaskSpec {self.name}: tfds splits {sorted(self.tfds)} must be in "
                        f"{SPLITS}")

  @property
  def fine_tuned(self) -> bool:
    """Retrieval uses the pretrained encoder as is (XTREME section 4)."""
    return self.task_type != "retrieval"


def _tsv_pairs(folder: str, fmt: str) -> tuple[FileLayout, ...]:
  return (FileLayout(folder, rf"{_ANY_DIR}(?P<split>train|dev|test)-{_LANG}\.tsv", fmt),)


def _tag_tsv(folder: str) -> FileLayout:
  return FileLayout(folder, rf"{_ANY_DIR}(?P<split>train|dev|test)-{_LANG}\.tsv", "tag_text")


# XTREME trains XQuAD and MLQA on SQuAD v1.1 (README, "XQuAD, MLQA, TyDiQA-GoldP").
_SQUAD_TRAIN = FileLayout("squad", rf"{_ANY_DIR}train-v1\.1\.json", "squad_json", lang="en",
                          split="train")
_SQUAD_TFDS_TRAIN = TfdsSplit("squad/v1.1", "train", "tfds_squad", lang="en")

# Label sets in the order of XTREME's label files: XnliProcessor/PawsxProcessor
# `get_labels`, and the sorted `labels.txt` of scripts/preprocess_{udpos,panx}.sh.
XNLI_LABELS = ("contradiction", "entailment", "neutral")
PAWSX_LABELS = ("0", "1")
UPOS_LABELS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
               "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")
PANX_LABELS = ("B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O")


def _langs(s: str) -> tuple[str, ...]:
  return tuple(s.split(","))


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec(
        "xnli", "classification", "accuracy",
        _langs("ar,bg,de,el,en,es,fr,hi,ru,sw,th,tr,ur,vi,zh"),
        _tsv_pairs("xnli", "pair_tsv"),
        {"train": TfdsSplit("xtreme_xnli", "train", "tfds_xnli", lang="en"),
         "dev": TfdsSplit("xnli", "validation", "tfds_xnli"),
         "test": TfdsSplit("xnli", "test", "tfds_xnli")},
        labels=XNLI_LABELS),
    TaskSpec(
        "pawsx", "classification", "accuracy", _langs("de,en,es,fr,ja,ko,zh"),
        _tsv_pairs("pawsx", "pawsx_tsv"),
        # `xtreme_pawsx` holds only machine-translated training data (no English,
        # no dev/test): the zero-shot data is in `paws_x_wiki`.
        {"train": TfdsSplit("paws_x_wiki/en", "train", "tfds_pair", lang="en"),
         "dev": TfdsSplit("paws_x_wiki/{lang}", "validation", "tfds_pair"),
         "test": TfdsSplit("paws_x_wiki/{lang}", "test", "tfds_pair")},
        labels=PAWSX_LABELS),
    TaskSpec(
        "udpos", "tagging", "seqeval_f1",
        _langs("af,ar,bg,de,el,en,es,et,eu,fa,fi,fr,he,hi,hu,id,it,ja,kk,ko,mr,nl,pt,ru,ta,te,"
               "th,tl,tr,ur,vi,yo,zh"),
        (_tag_tsv("udpos"),
         FileLayout("udpos", rf"{_ANY_DIR}{_LANG}_[a-z0-9]+-ud-(?P<split>train|dev|test)\.conllu",
                    "conllu")),
        {split: TfdsSplit(f"xtreme_pos/xtreme_pos_{'en' if split == 'train' else '{lang}'}",
                          split, "tfds_upos", lang="en" if split == "train" else None)
         for split in SPLITS},
        labels=UPOS_LABELS),
    TaskSpec(
        "panx", "tagging", "seqeval_f1",
        _langs("ar,he,vi,id,jv,ms,tl,eu,ml,ta,te,af,nl,en,de,el,bn,hi,mr,ur,fa,fr,it,pt,es,bg,"
               "ru,ja,ka,ko,th,sw,yo,my,zh,kk,tr,et,fi,hu"),
        (_tag_tsv("panx"),
         FileLayout("ner", rf"{_ANY_DIR}[a-z0-9]+_{_LANG}/(?P<split>train|dev|test)\.txt",
                    "tag_text"),
         FileLayout("ner", rf"{_ANY_DIR}{_LANG}\.(?P<split>train|dev|test)\.txt", "tag_text")),
        {"train": TfdsSplit("wikiann/en", "train", "tfds_wikiann", lang="en"),
         "dev": TfdsSplit("wikiann/{lang}", "validation", "tfds_wikiann"),
         "test": TfdsSplit("wikiann/{lang}", "test", "tfds_wikiann")},
        labels=PANX_LABELS),
    TaskSpec(
        "xquad", "qa", "squad", _langs("en,es,de,el,ru,tr,ar,vi,th,zh,hi"),
        (FileLayout("xquad", rf"{_ANY_DIR}xquad\.{_LANG}\.json", "squad_json", split="test"),
         _SQUAD_TRAIN),
        {"train": _SQUAD_TFDS_TRAIN, "test": TfdsSplit("xquad/{lang}", "test", "tfds_squad")}),
    TaskSpec(
        "mlqa", "qa", "mlqa", _langs("en,es,de,ar,hi,vi,zh"),
        (FileLayout("mlqa", rf"{_ANY_DIR}(?P<split>dev|test)-context-{_LANG}-question-(?P=lang)"
                    r"\.json", "squad_json"),
         _SQUAD_TRAIN),
        {"train": _SQUAD_TFDS_TRAIN,
         "dev": TfdsSplit("mlqa/{lang}", "validation", "tfds_squad"),
         "test": TfdsSplit("mlqa/{lang}", "test", "tfds_squad")}),
    TaskSpec(
        "tydiqa", "qa", "squad", _langs("en,ar,bn,fi,id,ko,ru,sw,te"),
        (FileLayout("tydiqa", rf"{_ANY_DIR}tydiqa\.(?:goldp\.)?{_LANG}\.(?P<split>train|dev)\.json",
                    "squad_json"),),
        # XTREME trains on the English part of TyDi QA GoldP (utils_preprocess.py
        # splits the train file by the language prefix of each question id).
        {"train": TfdsSplit("tydi_qa/goldp", "train", "tfds_squad", lang="en",
                            id_prefix="english-"),
         "dev": TfdsSplit("tydi_qa/goldp", "validation-{lang}", "tfds_squad")}),
    TaskSpec(
        "bucc2018", "retrieval", "bucc_f1", _langs("de,fr,ru,zh"),
        (FileLayout("bucc2018", rf"(?P<base>{_ANY_DIR}{_LANG}-en\.(?P<split>dev|test))\.(?P=lang)",
                    "bucc_text", partners=(r"\g<base>.en", r"\g<base>.gold")),),
        {"dev": TfdsSplit("bucc/bucc_{lang}", "validation", "tfds_bucc"),
         "test": TfdsSplit("bucc/bucc_{lang}", "test", "tfds_bucc")}),
    TaskSpec(
        "tatoeba", "retrieval", "accuracy",
        _langs("ar,he,vi,id,jv,tl,eu,ml,ta,te,af,nl,de,el,bn,hi,mr,ur,fa,fr,it,pt,es,bg,ru,ja,"
               "ka,ko,th,sw,zh,kk,tr,et,fi,hu"),
        (FileLayout("tatoeba", rf"(?P<base>{_ANY_DIR}tatoeba\.{_LANG}-eng)\.(?P=lang)",
                    "tatoeba_text", split="test", partners=(r"\g<base>.eng",), laser_codes=True),
         FileLayout("tatoeba", rf"(?P<base>{_ANY_DIR}{_LANG}-en)\.(?P=lang)", "tatoeba_text",
                    split="test", partners=(r"\g<base>.en",))),
        # The TFDS builder exposes LASER's test files as its `train` split.
        {"test": TfdsSplit("tatoeba/tatoeba_{lang}", "train", "tfds_tatoeba")}),
)}


def get_task(name: str) -> TaskSpec:
  if name not in TASKS:
    raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
  return TASKS[name]


def parse_tasks(names: str | Sequence[str]) -> tuple[TaskSpec, ...]:
  """Specs for a comma-separated list (the `--tasks` flag) or a sequence of names."""
  if isinstance(names, str):
    names = [n.strip() for n in names.split(",") if n.strip()]
  if not names:
    raise ConfigError(f"no task given; known: {', '.join(TASKS)}")
  return tuple(get_task(n) for n in names)


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
    """XTREME scores test sets; where labelled test data is absent (TyDi QA GoldP,
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
  """Sources for `spec` from TFDS builders (XTREME's languages; read lazily)."""
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
    raise ConfigError("give exactly one of data_dir (XTREME or shared-data files) and "
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
  """What `data` lacks for a run over `languages` (default: XTREME's languages)."""
  spec = data.spec
  if not data.sources:
    folders = sorted({lay.folder for lay in spec.layouts})
    return (Missing(spec.name, "task", (), f"nothing found under {data.root} in "
                                           f"{', '.join(folders)}"),)
  out = []
  en = spec.train_language
  if spec.fine_tuned and not data.has(en, "train"):
    out.append(Missing(spec.name, "train", (en,), "no fine-tuning data"))
  wanted = spec.languages if languages is None else tuple(languages)
  absent = tuple(lang for lang in wanted if data.eval_split(lang) is None)
  if absent:
    out.append(Missing(spec.name, "eval", absent, "no dev or test set"))
  if data.incomplete:
    out.append(Missing(spec.name, "files", (), "; ".join(data.incomplete)))
  return tuple(out)
