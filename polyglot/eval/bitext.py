"""`python -m polyglot.eval.bitext`: parallel-sentence retrieval on an aligned bitext.

    python -m polyglot.eval.bitext --checkpoint_dir=workdir/demo \\
        --bible=../shared/data/parallel/bible --languages=acu_Latn,swh_Latn,est_Latn \\
        [--books=REV] [--max_pairs=200] [--output=bitext/demo.json]
    python -m polyglot.eval.bitext --checkpoint_dir=workdir/demo \\
        --tatoeba=../shared/data/xtreme/tatoeba --languages=est,swh
    python -m polyglot.eval.bitext --checkpoint_dir=workdir/demo --files=dev.sw,dev.en \\
        [--languages=sw,en]

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
pairs. `--max_pairs=N`
keeps the first N aligned sentences of each pair. Prints a table; --output
writes it as JSON with the settings. Paths may be relative or gs://.
Errors print one `error: ...` line: exit 2 for flags, 1 for data and
checkpoints.
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
MANIFEST = "MANIFEST.tsv"  # the bible corpus's index of its files, not a language
_TATOEBA_ENGLISH = re.compile(r"tatoeba\.([a-z]+)-eng\.eng")  # LASER's file names
_HPARAMS_FIELD = re.compile(rf"(?:--gin\.)?(?:{NAME}/)?RetrievalHparams\.")
_MIN_SENTENCES = 2  # retrieval with one candidate is always right


@dataclasses.dataclass(frozen=True)
class Bitext:
  """Aligned sentences of two languages: `a[i]` translates `b[i]`."""
  lang_a: str
  lang_b: str
  a: tuple[str, ...]
  b: tuple[str, ...]
  aligned: int  # sentence pairs the source has, before --max_pairs


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


# ---- the command ----

def _names(text: str | None) -> list[str]:
  return [x.strip() for x in text.split(",") if x.strip()] if text else []


def check_flags(args: argparse.Namespace) -> None:
  """ConfigError for flags that do not go together; reads nothing."""
  langs = _names(args.languages)
  twice = sorted({x for x in langs if langs.count(x) > 1})
  if twice:
    raise ConfigError(f"--languages lists {', '.join(twice)} more than once: name each once")
  if args.max_pairs is not None and args.max_pairs < _MIN_SENTENCES:
    raise ConfigError(f"--max_pairs={args.max_pairs} is invalid: use >= {_MIN_SENTENCES} "
                      "(retrieval needs two sentences per side)")
  if args.books is not None and args.bible is None:
    raise ConfigError("--books selects verses of --bible: drop it or pass --bible=DIR")
  if args.bible is not None and len(langs) < 2:
    raise ConfigError("--bible needs --languages with at least two languages, e.g. "
                      "--languages=acu_Latn,swh_Latn")
  if args.tatoeba is not None and not langs:
    raise ConfigError("--tatoeba needs --languages, e.g. --languages=est,swh")
  if args.files is not None and len(args.files) != 2:
    raise ConfigError(f"--files={','.join(args.files)} is invalid: pass two line-aligned "
                      "files, --files=A,B")
  if args.files is not None and langs and len(langs) != 2:
    raise ConfigError("with --files, --languages names the two files' languages, e.g. "
                      "--languages=sw,en")


def read_bitexts(args: argparse.Namespace) -> list[Bitext]:
  langs = _names(args.languages)
  if args.bible is not None:
    return bible_bitexts(args.bible, langs, _names(args.books or DEFAULT_BOOKS), args.max_pairs)
  if args.tatoeba is not None:
    return tatoeba_bitexts(args.tatoeba, langs, args.max_pairs)
  a, b = args.files
  lang_a, lang_b = langs or (paths.Path(a).name, paths.Path(b).name)
  return [aligned_bitext(lang_a, lang_b, bitext.read_line_aligned(a, b), args.max_pairs)]


def user_settings(args: argparse.Namespace) -> dict[str, Any]:
  """The `RetrievalHparams` fields given by flags (--layer, --pooling, --max_seq_length)."""
  return {k: getattr(args, k) for k in ("layer", "pooling", "max_seq_length")
          if getattr(args, k) is not None}


def as_flags(message: str) -> str:
  """`message` (of `hparams`, which names gin bindings) with flags in their place:
  `--gin.bitext/RetrievalHparams.layer=3` -> `--layer=3`."""
  return _HPARAMS_FIELD.sub("--", message)


def requested_hparams(given: dict[str, Any]) -> hparams.RetrievalHparams:
  """XTREME's retrieval settings with the `given` fields; a ConfigError naming a bad flag."""
  try:
    return hparams.RetrievalHparams(**given)
  except ConfigError as e:
    raise ConfigError(as_flags(str(e))) from None


def fitted_hparams(given: dict[str, Any], num_layers: int, max_len: int
                   ) -> hparams.RetrievalHparams:
  """XTREME's retrieval settings with the `given` ones, the others fitted to the encoder
  (`hparams.fit`); a ConfigError when a given value does not fit."""
  fit = hparams.fit(NAME, requested_hparams(given), num_layers, max_len, given)
  if fit.errors:
    raise ConfigError(as_flags("; ".join(fit.errors)))
  return fit.hparams


def checkpoint_embedder(checkpoint_dir: str, step: int | None, given: dict[str, Any]
                        ) -> tuple[Callable[[list[str], str], np.ndarray], dict[str, Any]]:
  """`embed(sentences, language) -> [n, d]` by a checkpoint's frozen encoder, with the
  retrieval settings `given` and the others fitted to it; and those settings."""
  loaded = api.load(checkpoint_dir, step)
  cfg = loaded.config
  hp = fitted_hparams(given, cfg.num_layers, cfg.max_len)
  tok = SentencePieceTokenizer(loaded.vocab.model_bytes, f"the vocabulary of {checkpoint_dir}")
  embedder = embed.Embedder(loaded.model.encoder, tok, xtreme_run.make_mesh(None))
  settings = {"checkpoint": checkpoint_dir, "step": loaded.step, "layer": hp.layer,
              "num_layers": cfg.num_layers, "pooling": hp.pooling,
              "max_seq_length": hp.max_seq_length}
  return (lambda texts, lang: embedder(texts, hp, lang)), settings


def run(args: argparse.Namespace) -> str:
  """Checks flags and data, loads the checkpoint, scores, writes --output; the report."""
  check_flags(args)
  given = user_settings(args)
  requested_hparams(given)  # an invalid value is an error before anything is read
  if args.output:
    cli.check_output_file(args.output, "--output", "bitext.json")
  bitexts = read_bitexts(args)  # before the checkpoint loads: data errors come fast
  embed_fn, settings = checkpoint_embedder(args.checkpoint_dir, args.step, given)
  settings.update({k: getattr(args, k) for k in ("bible", "tatoeba", "files", "max_pairs")})
  settings["books"] = _names(args.books or DEFAULT_BOOKS) if args.bible else None
  pairs = score(bitexts, embed_all(bitexts, embed_fn))
  report = table(pairs, settings)
  if args.output:
    paths.write_text(args.output, json.dumps(
        {"settings": settings, "pairs": pairs, "average": average(pairs)}, indent=2,
        ensure_ascii=False) + "\n")
    report += f"\nwrote {args.output}"
  return report


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(__doc__, prog="python -m polyglot.eval.bitext")
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
  p.add_argument("--output", type=paths.resolve, default=None, help="a JSON file to write")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  return cli.main(parser(), run, argv)


if __name__ == "__main__":
  sys.exit(main())
