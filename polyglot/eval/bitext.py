"""`python -m polyglot.eval.bitext`: parallel-sentence retrieval on an aligned bitext.

    python -m polyglot.eval.bitext --checkpoint_dir=workdir/demo \\
        --bible=../shared/data/parallel/bible --languages=acu_Latn,swh_Latn,est_Latn \\
        [--books=REV] [--max_pairs=200] [--output=bitext/demo.json]
    python -m polyglot.eval.bitext --checkpoint_dir=workdir/demo \\
        --tatoeba=../shared/data/xtreme/tatoeba --languages=est,swh
    python -m polyglot.eval.bitext --checkpoint_dir=workdir/demo --files=dev.sw,dev.en \\
        [--languages=sw,en]
    python -m polyglot.eval --benchmark=bitext --checkpoint_dir=workdir/demo \\
        --files=dev.sw,dev.en --output_dir=bitext/demo

`python -m polyglot.eval --benchmark=bitext ...` is this command.

Shows whether cross-lingual objectives (TLM, InfoXLM's XLCo) align sentence
representations across languages. One bitext source:
- `--bible=DIR`: one `<lang>.tsv` per language, `verse_id<TAB>text`
  (../shared/data/README.md section 7); every pair of `--languages`, joined on
  verse id, restricted to the verses of `--books` (default REV, e.g. a book
  held out of training);
- `--tatoeba=DIR`: LASER's `tatoeba.<xxx>-eng.{<xxx>,eng}`, each of
  `--languages` (ISO 639-3, as in the file names) paired with English;
- `--files=A,B`: two line-aligned files (Moses/OPUS), named by `--languages`
  or by their file names.

Each pair's sentences are embedded by the frozen encoder as XTREME's Tatoeba
does (`polyglot.eval.embed`: pooled hidden state; the layer and
length fitted to the checkpoint by `hparams.fit` unless --layer,
--max_seq_length are given). Accuracy@1 in percent, both ways: a->b, the
share of a-sentences whose cosine-nearest b-sentence is their translation;
b->a likewise; and their mean; and BUCC-style mining F1: ratio-margin
candidates of the two sides (XTREME's BUCC mining) against the alignment, at
the F1-best threshold (no dev split: an upper bound); then the average over
pairs. `--max_pairs=N` keeps the first N aligned sentences of each pair.
Prints a table; --output writes it as JSON with the settings, --output_dir
writes that JSON as results.json and the table as results.md. Paths may be
relative or gs://. Errors print one `error: ...` line: exit 2 for flags, 1
for data and checkpoints.

A pretraining run scores a bitext at every held-out evaluation when gin sets
`RunConfig.bitext = @BitextConfig()`, whose fields are these flags
(`BitextConfig.bible`, `.languages`, `.books`, `.max_pairs`, ...): the
`eval_bitext` rows of metrics.jsonl and `bitext.json` in the workdir
(polyglot/train.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from polyglot import api, paths
from polyglot.convert import cli
from polyglot.data import bitext
from polyglot.errors import ConfigError, DataError
from polyglot.eval import embed, hparams, readers, retrieval
from polyglot.eval import run as xtreme_run
from polyglot.eval.tokenizer import SentencePieceTokenizer

NAME = "bitext"  # how `hparams.fit` names these settings
DEFAULT_BOOKS = "REV"
REPORT_FILE = "bitext.json"  # in a pretraining run's workdir
MANIFEST = "MANIFEST.tsv"  # the bible corpus's index of its files, not a language
_TATOEBA_ENGLISH = re.compile(r"tatoeba\.([a-z]+)-eng\.eng")  # LASER's file names
_HPARAMS_FIELD = re.compile(rf"(?:--gin\.)?(?:{NAME}/)?RetrievalHparams\.")
_CONFIG_FIELD = re.compile(r"BitextConfig\.")
_MIN_SENTENCES = 2  # retrieval with one candidate is always right


@dataclasses.dataclass(frozen=True)
class Bitext:
  """Aligned sentences of two languages: `a[i]` translates `b[i]`."""
  lang_a: str
  lang_b: str
  a: tuple[str, ...]
  b: tuple[str, ...]
  aligned: int  # sentence pairs the source has, before --max_pairs


@dataclasses.dataclass(frozen=True)
class BitextConfig:
  """A bitext to score and how: one source (`bible`, `tatoeba` or `files`), its
  `languages`, the `books` of a bible (default REV), `max_pairs` per pair, and the
  retrieval settings (None: XTREME's, fitted to the encoder). The command's flags have
  the same names; `RunConfig.bitext` scores it at every held-out evaluation of a
  pretraining run. Without a source it is off."""
  bible: str | None = None
  tatoeba: str | None = None
  files: tuple[str, ...] | None = None
  languages: tuple[str, ...] = ()
  books: tuple[str, ...] | None = None
  max_pairs: int | None = None
  layer: int | None = None
  pooling: str | None = None
  max_seq_length: int | None = None

  def __post_init__(self):
    for name in ("files", "languages", "books"):  # gin binds lists
      if getattr(self, name) is not None:
        object.__setattr__(self, name, tuple(getattr(self, name)))
    check_config(self)

  @property
  def enabled(self) -> bool:
    return self.source is not None

  @property
  def source(self) -> str | None:
    """The field naming the source, None when none does."""
    return next((k for k in ("bible", "tatoeba", "files") if getattr(self, k) is not None),
                None)

  def retrieval_settings(self) -> dict[str, Any]:
    """The `RetrievalHparams` fields this config sets."""
    return {k: getattr(self, k) for k in ("layer", "pooling", "max_seq_length")
            if getattr(self, k) is not None}


def check_config(cfg: BitextConfig) -> None:
  """ConfigError for fields that do not go together; reads nothing."""
  c = "BitextConfig"
  sources = [k for k in ("bible", "tatoeba", "files") if getattr(cfg, k) is not None]
  if len(sources) > 1:
    raise ConfigError(f"{c} sets {' and '.join(f'{c}.{k}' for k in sources)}: keep one source")
  langs = cfg.languages
  twice = sorted({x for x in langs if langs.count(x) > 1})
  if twice:
    raise ConfigError(f"{c}.languages lists {', '.join(twice)} more than once: name each once")
  if cfg.max_pairs is not None and cfg.max_pairs < _MIN_SENTENCES:
    raise ConfigError(f"{c}.max_pairs={cfg.max_pairs} is invalid: use >= {_MIN_SENTENCES} "
                      "(retrieval needs two sentences per side)")
  if cfg.books is not None and cfg.bible is None:
    raise ConfigError(f"{c}.books selects verses of {c}.bible: drop it or set {c}.bible")
  if cfg.bible is not None and len(langs) < 2:
    raise ConfigError(f"{c}.bible needs {c}.languages with at least two languages, e.g. "
                      "acu_Latn and swh_Latn")
  if cfg.tatoeba is not None and not langs:
    raise ConfigError(f"{c}.tatoeba needs {c}.languages, e.g. est and swh")
  if cfg.files is not None and len(cfg.files) != 2:
    raise ConfigError(f"{c}.files={','.join(cfg.files)} is invalid: pass two line-aligned "
                      "files")
  if cfg.files is not None and langs and len(langs) != 2:
    raise ConfigError(f"with {c}.files, {c}.languages names the two files' languages, e.g. "
                      "sw and en")
  requested_hparams(cfg.retrieval_settings())  # an invalid value is an error here


# ---- reading ----

def aligned_bitext(lang_a: str, lang_b: str, pairs: Sequence[tuple[str, str]],
                   max_pairs: int | None) -> Bitext:
  """The first `max_pairs` (default all) of `pairs`; a DataError when fewer than 2."""
  if len(pairs) < _MIN_SENTENCES:
    raise DataError(f"{lang_a}-{lang_b} has {len(pairs)} aligned sentence(s); retrieval needs "
                    f"at least {_MIN_SENTENCES}: pick other languages or books")
  kept = pairs[:max_pairs]
  return Bitext(lang_a, lang_b, tuple(a for a, _ in kept), tuple(b for _, b in kept), len(pairs))


def check_languages(wanted: Sequence[str], available: Sequence[str], where: str) -> None:
  unknown = [lang for lang in wanted if lang not in available]
  if unknown:
    raise DataError(f"unknown language {', '.join(map(repr, unknown))} in {where}; available: "
                    f"{', '.join(available) or 'none'}")


def _folder(folder: str, flag: str) -> paths.Path:
  path = paths.Path(folder)
  if not path.is_dir():
    raise DataError(f"{flag} {folder} is not a directory: pass the folder of the corpus")
  return path


def bible_languages(folder: str) -> list[str]:
  """The languages of an id-joined corpus folder: its `<lang>.tsv` files."""
  return sorted(p.name[:-len(".tsv")] for p in _folder(folder, "--bible").iterdir()
                if p.name.endswith(".tsv") and p.name != MANIFEST)


def book_verses(verses: dict[str, str], books: Sequence[str], where: str) -> dict[str, str]:
  """The verses of `books` (ids `b.<BOOK>.<chapter>.<verse>`), in order; a DataError
  naming a book that `where` has no verse of, and the books it has."""
  try:
    book = {key: bitext.verse_book(key) for key in verses}
  except DataError as e:
    raise DataError(f"{where}: {e}") from None
  have = list(dict.fromkeys(book.values()))
  absent = [b for b in books if b not in have]
  if absent:
    raise DataError(f"{where} has no verses of book {', '.join(absent)}; its books: "
                    f"{', '.join(have)}")
  return {key: text for key, text in verses.items() if book[key] in books}


def bible_bitexts(folder: str, languages: Sequence[str], books: Sequence[str],
                  max_pairs: int | None) -> list[Bitext]:
  """Every pair of `languages`, joined on the verse ids of `books`."""
  check_languages(languages, bible_languages(folder), folder)
  files = {lang: paths.join(folder, f"{lang}.tsv") for lang in languages}
  verses = {lang: book_verses(bitext.read_id_tsv(f), books, f) for lang, f in files.items()}
  out = []
  for a, b in itertools.combinations(languages, 2):
    joined = bitext.join_on_ids(verses[a], verses[b])  # (id, a's text, b's text), a's order
    out.append(aligned_bitext(a, b, [(ta, tb) for _, ta, tb in joined], max_pairs))
  return out


def tatoeba_languages(folder: str) -> list[str]:
  """The languages of a LASER Tatoeba folder (`tatoeba.<xxx>-eng.eng`)."""
  names = (p.name for p in _folder(folder, "--tatoeba").iterdir())
  return sorted(m.group(1) for m in map(_TATOEBA_ENGLISH.fullmatch, names) if m)


def tatoeba_bitexts(folder: str, languages: Sequence[str], max_pairs: int | None
                    ) -> list[Bitext]:
  """Each of `languages` with English, read as XTREME reads Tatoeba (`readers.read_tatoeba`)."""
  check_languages(languages, tatoeba_languages(folder), folder)
  out = []
  for lang in languages:
    base = paths.join(folder, f"tatoeba.{lang}-eng")
    s = readers.read_tatoeba(paths.Path(f"{base}.{lang}"), paths.Path(f"{base}.eng"))
    out.append(aligned_bitext(lang, "eng", list(zip(s.source, s.english)), max_pairs))
  return out


def read_bitexts(cfg: BitextConfig) -> list[Bitext]:
  """The bitexts `cfg` names (paths relative to the working directory, or URLs)."""
  if cfg.bible is not None:
    return bible_bitexts(paths.resolve(cfg.bible), cfg.languages,
                         cfg.books or (DEFAULT_BOOKS,), cfg.max_pairs)
  if cfg.tatoeba is not None:
    return tatoeba_bitexts(paths.resolve(cfg.tatoeba), cfg.languages, cfg.max_pairs)
  a, b = map(paths.resolve, cfg.files)
  lang_a, lang_b = cfg.languages or (paths.Path(a).name, paths.Path(b).name)
  return [aligned_bitext(lang_a, lang_b, bitext.read_line_aligned(a, b), cfg.max_pairs)]


# ---- scoring ----

def texts_by_language(bitexts: Sequence[Bitext]) -> dict[str, list[str]]:
  """Each language's distinct sentences over all `bitexts`, in order of first use."""
  out: dict[str, dict[str, None]] = {}
  for bt in bitexts:
    out.setdefault(bt.lang_a, {}).update(dict.fromkeys(bt.a))
    out.setdefault(bt.lang_b, {}).update(dict.fromkeys(bt.b))
  return {lang: list(texts) for lang, texts in out.items()}


def embed_all(bitexts: Sequence[Bitext], embed: Callable[[list[str], str], np.ndarray]
              ) -> dict[tuple[str, str], np.ndarray]:
  """(language, sentence) -> [d] embedding, each distinct sentence of a language embedded
  once by `embed(sentences, language) -> [n, d]`."""
  out = {}
  for lang, texts in texts_by_language(bitexts).items():
    out.update({(lang, t): row for t, row in zip(texts, embed(texts, lang))})
  return out


def mining_f1(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
  """BUCC-style mining F1 (percent) over row-aligned [n, d] embeddings: the one-to-one
  ratio-margin candidates of the two sides (`retrieval.margin_mine`, XTREME's
  `mine_bitext`) against the alignment, at the F1-best score threshold. A bitext has no
  dev split to choose the threshold on, so it is chosen on these pairs: an upper bound
  of what a threshold fixed in advance gives."""
  k = min(retrieval.BUCC_NEIGHBOURS, len(emb_a), len(emb_b))
  candidates = {(s, t): score for s, t, score in retrieval.margin_mine(emb_a, emb_b, k)}
  return retrieval.bucc_scores(candidates, {(i, i) for i in range(len(emb_a))})["f1"]


def score_pair(emb_a: np.ndarray, emb_b: np.ndarray) -> dict[str, float]:
  """Over row-aligned [n, d] embeddings: accuracy@1 (percent) both ways, a->b the rows of
  `emb_a` whose cosine-nearest row of `emb_b` is their own, b->a likewise, and their mean;
  and the mining F1 (`mining_f1`)."""
  a_to_b = retrieval.tatoeba_accuracy(emb_b, emb_a)  # every a queries the b side
  b_to_a = retrieval.tatoeba_accuracy(emb_a, emb_b)
  return {"a_to_b": a_to_b, "b_to_a": b_to_a, "mean": (a_to_b + b_to_a) / 2,
          "mining_f1": mining_f1(emb_a, emb_b)}


def score(bitexts: Sequence[Bitext], embeddings: dict[tuple[str, str], np.ndarray]
          ) -> list[dict[str, Any]]:
  """Per pair: languages, sentence counts and `score_pair` over `embeddings` (`embed_all`)."""
  out = []
  for bt in bitexts:
    emb_a = np.stack([embeddings[(bt.lang_a, t)] for t in bt.a])  # [n, d]
    emb_b = np.stack([embeddings[(bt.lang_b, t)] for t in bt.b])  # [n, d]
    out.append({"a": bt.lang_a, "b": bt.lang_b, "aligned": bt.aligned, "sentences": len(bt.a),
                **score_pair(emb_a, emb_b)})
  return out


def average(pairs: Sequence[dict[str, Any]]) -> dict[str, float]:
  """The mean over pairs of each direction, of the pair means and of the mining F1s."""
  return {k: float(np.mean([p[k] for p in pairs]))
          for k in ("a_to_b", "b_to_a", "mean", "mining_f1")}


def table(pairs: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
  """The report: a settings line, a row per pair, the average."""
  keys = ("a_to_b", "b_to_a", "mean", "mining_f1")
  rows = [(f"{p['a']}-{p['b']}", str(p["sentences"]), *(p[k] for k in keys)) for p in pairs]
  avg = average(pairs)
  rows.append(("average", "", *(avg[k] for k in keys)))
  width = max(len("pair"), *(len(r[0]) for r in rows))
  lines = [f"{settings['checkpoint']} step {settings['step']}: hidden state {settings['layer']} "
           f"of {settings['num_layers']}, {settings['pooling']} pooling, at most "
           f"{settings['max_seq_length']} pieces; accuracy@1 and mining F1 (%)",
           f"{'pair':<{width}} {'n':>6} {'a->b':>6} {'b->a':>6} {'mean':>6} {'mine F1':>7}"]
  lines += [f"{name:<{width}} {n:>6} {x:6.1f} {y:6.1f} {m:6.1f} {f:7.1f}"
            for name, n, x, y, m, f in rows]
  return "\n".join(lines)


# ---- settings and reports ----

def as_config(message: str) -> str:
  """`message` (of `hparams`, which names gin bindings) with BitextConfig's fields in their
  place: `--gin.bitext/RetrievalHparams.layer=3` -> `BitextConfig.layer=3`."""
  return _HPARAMS_FIELD.sub("BitextConfig.", message)


def requested_hparams(given: dict[str, Any]) -> hparams.RetrievalHparams:
  """XTREME's retrieval settings with the `given` fields; a ConfigError naming a bad field."""
  try:
    return hparams.RetrievalHparams(**given)
  except ConfigError as e:
    raise ConfigError(as_config(str(e))) from None


def fitted_hparams(cfg: BitextConfig, num_layers: int, max_len: int
                   ) -> hparams.RetrievalHparams:
  """XTREME's retrieval settings with those `cfg` sets, the others fitted to the encoder
  (`hparams.fit`); a ConfigError when a set value does not fit."""
  given = cfg.retrieval_settings()
  fit = hparams.fit(NAME, requested_hparams(given), num_layers, max_len, given)
  if fit.errors:
    raise ConfigError(as_config("; ".join(fit.errors)))
  return fit.hparams


def describe(cfg: BitextConfig, hp: hparams.RetrievalHparams, num_layers: int
             ) -> dict[str, Any]:
  """The settings a report states: the source and the retrieval settings used."""
  return {"layer": hp.layer, "num_layers": num_layers, "pooling": hp.pooling,
          "max_seq_length": hp.max_seq_length, "bible": cfg.bible, "tatoeba": cfg.tatoeba,
          "files": list(cfg.files) if cfg.files else None, "max_pairs": cfg.max_pairs,
          "books": list(cfg.books or (DEFAULT_BOOKS,)) if cfg.bible else None}


def report_json(settings: dict[str, Any], pairs: Sequence[dict[str, Any]]) -> str:
  """The report as JSON: settings, a row per pair, the average."""
  return json.dumps({"settings": settings, "pairs": list(pairs), "average": average(pairs)},
                    indent=2, ensure_ascii=False) + "\n"


def scalars(pairs: Sequence[dict[str, Any]]) -> dict[str, float]:
  """Metric rows: `<a>-<b>/<metric>` per pair and `average/<metric>`."""
  keys = ("a_to_b", "b_to_a", "mean", "mining_f1")
  out = {f"{p['a']}-{p['b']}/{k}": float(p[k]) for p in pairs for k in keys}
  return out | {f"average/{k}": v for k, v in average(pairs).items()}


def summary(pairs: Sequence[dict[str, Any]]) -> str:
  """One line: the averages over pairs."""
  avg = average(pairs)
  return (f"bitext: accuracy@1 {avg['mean']:.1f}% (a->b {avg['a_to_b']:.1f}, b->a "
          f"{avg['b_to_a']:.1f}), mining F1 {avg['mining_f1']:.1f}, over {len(pairs)} "
          f"pair{'s' * (len(pairs) != 1)}")


# ---- the command ----

def _names(text: str | None) -> tuple[str, ...]:
  return tuple(x.strip() for x in text.split(",") if x.strip()) if text else ()


def as_flags(message: str) -> str:
  """`message` (naming BitextConfig's fields) with the flags in their place:
  `BitextConfig.layer=3` -> `--layer=3`."""
  return _CONFIG_FIELD.sub("--", as_config(message))


def config_of(args: argparse.Namespace) -> BitextConfig:
  """The flags as a BitextConfig; a ConfigError naming the flags that do not go together."""
  try:
    return BitextConfig(
        bible=args.bible, tatoeba=args.tatoeba, files=args.files,
        languages=_names(args.languages),
        books=_names(args.books) if args.books is not None else None,
        max_pairs=args.max_pairs, layer=args.layer, pooling=args.pooling,
        max_seq_length=args.max_seq_length)
  except ConfigError as e:
    raise ConfigError(as_flags(str(e))) from None


def checkpoint_embedder(checkpoint_dir: str, step: int | None, cfg: BitextConfig
                        ) -> tuple[Callable[[list[str], str], np.ndarray], dict[str, Any]]:
  """`embed(sentences, language) -> [n, d]` by a checkpoint's frozen encoder, with the
  retrieval settings of `cfg` and the others fitted to it; and the report's settings."""
  loaded = api.load(checkpoint_dir, step)
  model_cfg = loaded.config
  try:
    hp = fitted_hparams(cfg, model_cfg.num_layers, model_cfg.max_len)
  except ConfigError as e:
    raise ConfigError(as_flags(str(e))) from None
  tok = SentencePieceTokenizer(loaded.vocab.model_bytes, f"the vocabulary of {checkpoint_dir}")
  embedder = embed.Embedder(loaded.model.encoder, tok, xtreme_run.make_mesh(None))
  settings = {"checkpoint": checkpoint_dir, "step": loaded.step,
              **describe(cfg, hp, model_cfg.num_layers)}
  return (lambda texts, lang: embedder(texts, hp, lang)), settings


def markdown(report: str) -> str:
  """results.md of --output_dir: the table as printed."""
  return f"# Bitext retrieval\n\n```\n{report}\n```\n"


def run(args: argparse.Namespace) -> str:
  """Checks flags and data, loads the checkpoint, scores, writes --output or --output_dir;
  the report."""
  cfg = config_of(args)  # an invalid value is an error before anything is read
  if args.output:
    cli.check_output_file(args.output, "--output", "bitext.json")
  if args.output_dir:
    cli.check_output_file(paths.join(args.output_dir, "results.json"), "--output_dir",
                          "results.json")
  bitexts = read_bitexts(cfg)  # before the checkpoint loads: data errors come fast
  embed_fn, settings = checkpoint_embedder(args.checkpoint_dir, args.step, cfg)
  pairs = score(bitexts, embed_all(bitexts, embed_fn))
  report = table(pairs, settings)
  if args.output:
    paths.write_text(args.output, report_json(settings, pairs))
    report += f"\nwrote {args.output}"
  if args.output_dir:
    paths.write_text(paths.join(args.output_dir, "results.json"), report_json(settings, pairs))
    paths.write_text(paths.join(args.output_dir, "results.md"), markdown(report))
    report += f"\nwrote {paths.join(args.output_dir, 'results.json')} and results.md"
  return report


def parser(prog: str = "python -m polyglot.eval.bitext") -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__, prog=prog)
  p.add_argument("--checkpoint_dir", "--checkpoint-dir", "--checkpoint", type=paths.resolve,
                 required=True, help="a polyglot.train workdir or its checkpoints/")
  p.add_argument("--step", type=int, default=None, help="default: the newest checkpoint")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--bible", type=paths.resolve, default=None,
                      help="folder of <lang>.tsv files, verse_id<TAB>text")
  source.add_argument("--tatoeba", type=paths.resolve, default=None,
                      help="folder of LASER's tatoeba.<xxx>-eng.{<xxx>,eng}")
  source.add_argument("--files", type=lambda text: [paths.resolve(x) for x in _names(text)],
                      default=None, help="A,B: two line-aligned files")
  p.add_argument("--languages", default=None, help="comma-separated")
  p.add_argument("--books", default=None,
                 help=f"with --bible, comma-separated book codes (default {DEFAULT_BOOKS})")
  p.add_argument("--max_pairs", "--max-pairs", type=int, default=None, metavar="N",
                 help="keep the first N aligned sentences of each pair (default: all)")
  p.add_argument("--layer", type=cli.non_negative_int, default=None,
                 help="hidden state, 0 = embeddings (default: fitted to the depth)")
  p.add_argument("--pooling", choices=hparams.POOLINGS, default=None, help="default: mean")
  p.add_argument("--max_seq_length", "--max-seq-length", type=cli.positive_int, default=None,
                 help="pieces per sentence with <s> and </s> (default: 512, at most max_len)")
  output = p.add_mutually_exclusive_group()
  output.add_argument("--output", type=paths.resolve, default=None, help="a JSON file to write")
  output.add_argument("--output_dir", "--output-dir", type=paths.resolve, default=None,
                      help="a folder to write results.json and results.md into")
  return p


def main(argv: Sequence[str] | None = None, prog: str = "python -m polyglot.eval.bitext"
         ) -> int:
  return cli.main(parser(prog), run, argv)


if __name__ == "__main__":
  sys.exit(main())
