"""`python -m polyglot.eval.bitext`: retrieval accuracy on real bitexts (the shared bible and
Tatoeba) equals brute-force cosine nearest neighbours over embeddings made independently
(the checkpoint's own vocabulary, one padded batch, `models.sentence_embeddings`)."""
import json
import logging
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import hf_testing
import polyglot
from polyglot import models
from polyglot.errors import ConfigError
from polyglot.eval import bitext as bitext_eval

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
BIBLE = DATA / "parallel" / "bible"
TATOEBA = DATA / "xtreme" / "tatoeba"
MAX_LEN = 64
BIBLE_LANGS = ("acu_Latn", "swh_Latn", "est_Latn")
POOLED = {"mean": "mean", "cls": "first"}  # --pooling -> models.sentence_embeddings' pooling


def _need(folder: pathlib.Path) -> None:
  if not folder.is_dir():
    pytest.skip(f"{folder} is absent (../shared data)")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab):
  """The workdir of a tiny random MLM (2 layers: XTREME's 2/3 rule picks hidden state 1)."""
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=MAX_LEN)
  workdir = tmp_path_factory.mktemp("bitext") / "run"
  hf_testing.save_checkpoint(workdir, "masked_lm", cfg, vocab)
  return workdir


def run_main(capsys, args) -> tuple[int, str, str]:
  """(exit code, stdout, stderr) of `python -m polyglot.eval.bitext args`, in this process."""
  capsys.readouterr()
  try:
    code = bitext_eval.main(args)
  except SystemExit as e:  # argparse
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


# ---- the reference: plain file reading, one batch, brute-force cosine ----

def bible_pairs(lang_a: str, lang_b: str, book: str) -> list[tuple[str, str]]:
  """(a, b) verse texts of `book` with the same verse id, in a's file order."""
  def verses(lang):
    rows = (line.split("\t") for line in (BIBLE / f"{lang}.tsv").read_text("utf-8").splitlines())
    return {vid: text for vid, text in rows if vid.split(".")[1] == book}
  a, b = verses(lang_a), verses(lang_b)
  return [(text, b[vid]) for vid, text in a.items() if vid in b]


def tatoeba_pairs(lang: str) -> list[tuple[str, str]]:
  def lines(suffix):
    return [s.strip() for s in (TATOEBA / f"tatoeba.{lang}-eng.{suffix}").read_text(
        "utf-8").splitlines()]
  return list(zip(lines(lang), lines("eng")))


def reference_embeddings(loaded, texts, layer: int, pooling: str, length: int) -> np.ndarray:
  """[n, d]: `<s> pieces </s>` cut to `length`, padded to max_len, pooled at `layer`."""
  vocab = loaded.vocab
  ids = np.full((len(texts), MAX_LEN), vocab.pad_id, np.int32)
  for i, text in enumerate(texts):
    row = [vocab.bos_id, *vocab.encode(text)[:length - 2], vocab.eos_id]
    ids[i, :len(row)] = row
  return np.asarray(models.sentence_embeddings(loaded.model.encoder, jnp.asarray(ids),
                                               layer=layer, pooling=pooling))


def brute_force(emb_a: np.ndarray, emb_b: np.ndarray) -> tuple[float, float, float, float]:
  """Accuracy@1 (%) a->b and b->a from the full cosine matrix, and the share (%) of rows
  and of columns whose best two cosines are within 1e-5: float noise may flip those."""
  a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
  b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)
  cos = a @ b.T  # [n, n]
  n = np.arange(len(a))
  ties = [100 * np.mean(np.diff(np.sort(c, axis=1)[:, -2:], axis=1) < 1e-5)
          for c in (cos, cos.T)]
  return (100 * np.mean(cos.argmax(axis=1) == n), 100 * np.mean(cos.argmax(axis=0) == n),
          *ties)


# ---- tests ----

def bible_case():
  """Flags, [(a, b, every aligned pair)], and the layer, pooling and length they mean: the
  fitted defaults (hidden state round(2/3 x 2) = 1, mean, max_len)."""
  _need(BIBLE)
  return ([f"--bible={BIBLE}", f"--languages={','.join(BIBLE_LANGS)}", "--max_pairs=24"],
          [(a, b, bible_pairs(a, b, "REV")) for i, a in enumerate(BIBLE_LANGS)
           for b in BIBLE_LANGS[i + 1:]], 1, "mean", MAX_LEN)


def tatoeba_case():
  """As `bible_case`, every setting given by a flag."""
  _need(TATOEBA)
  return ([f"--tatoeba={TATOEBA}", "--languages=swh,est", "--max_pairs=20", "--layer=2",
           "--pooling=cls", "--max_seq_length=16"],
          [(lang, "eng", tatoeba_pairs(lang)) for lang in ("swh", "est")], 2, "cls", 16)


@pytest.mark.parametrize("case", [bible_case, tatoeba_case])
def test_accuracy_equals_brute_force_cosine(ckpt, tmp_path, capsys, case):
  flags, expected, layer, pooling, length = case()
  out = tmp_path / "bitext.json"
  code, stdout, stderr = run_main(capsys, [f"--checkpoint={ckpt}", *flags, f"--output={out}"])
  assert code == 0, stderr
  report = json.loads(out.read_text("utf-8"))
  loaded = polyglot.load(str(ckpt))
  assert [(p["a"], p["b"]) for p in report["pairs"]] == [(a, b) for a, b, _ in expected]
  n = report["settings"]["max_pairs"]
  for got, (_, _, pairs) in zip(report["pairs"], expected):
    assert got["aligned"] == len(pairs) > n and got["sentences"] == n
    side_a, side_b = ([p[i] for p in pairs[:n]] for i in (0, 1))
    a_to_b, b_to_a, ties_ab, ties_ba = brute_force(
        *(reference_embeddings(loaded, side, layer, POOLED[pooling], length)
          for side in (side_a, side_b)))
    assert ties_ab + ties_ba <= 20  # most rows decided, so the comparison means something
    assert abs(got["a_to_b"] - a_to_b) <= ties_ab + 1e-6
    assert abs(got["b_to_a"] - b_to_a) <= ties_ba + 1e-6
    assert got["mean"] == pytest.approx((got["a_to_b"] + got["b_to_a"]) / 2)
  assert report["average"]["mean"] == pytest.approx(
      np.mean([p["mean"] for p in report["pairs"]]))
  assert report["settings"]["step"] == 7 and report["settings"]["layer"] == layer
  assert report["settings"]["max_seq_length"] == length
  assert report["settings"]["pooling"] == pooling
  assert stdout.splitlines()[-2].startswith("average")


def test_same_text_both_sides_is_found_and_a_shifted_alignment_never(ckpt, tmp_path, capsys):
  _need(BIBLE)
  verses = [a for a, _ in bible_pairs("swh_Latn", "est_Latn", "REV")[:12]]
  assert len(set(verses)) == 12
  (tmp_path / "a.txt").write_text("\n".join(verses) + "\n", "utf-8")
  # Line i of b.txt is verse i+1: each sentence's identical copy sits one line off.
  (tmp_path / "b.txt").write_text("\n".join(verses[1:] + verses[:1]) + "\n", "utf-8")
  out = tmp_path / "r.json"
  for other, expected in (("a.txt", 100.0), ("b.txt", 0.0)):
    code, _, stderr = run_main(capsys, [f"--checkpoint={ckpt}", f"--files={tmp_path / 'a.txt'},"
                                f"{tmp_path / other}", "--languages=sw,copy", f"--output={out}"])
    assert code == 0, stderr
    pair, = json.loads(out.read_text("utf-8"))["pairs"]
    assert (pair["a"], pair["b"], pair["sentences"]) == ("sw", "copy", 12)
    assert pair["a_to_b"] == pair["b_to_a"] == pair["mean"] == expected, other
    assert pair["mining_f1"] == expected, other  # mined: the copies, one line off or not


def test_each_direction_retrieves_from_the_other_side():
  # x1 is nearer y0 than y1, so x->y finds 1 of 2; y1 is still nearer x1 than x0, so y->x
  # finds both.
  pair = bitext_eval.Bitext("x", "y", ("x0", "x1"), ("y0", "y1"), aligned=5)
  table = {("x", "x0"): np.array([1.0, 0.0]), ("x", "x1"): np.array([1.0, 0.1]),
           ("y", "y0"): np.array([1.0, 0.0]), ("y", "y1"): np.array([0.0, 1.0])}
  scores = bitext_eval.score([pair, bitext_eval.Bitext("y", "x", ("y0", "y1"), ("x0", "x1"),
                                                       aligned=2)], table)
  # Mining (ratio margin, 2 neighbours): x0-y0 scores 1.336 and x1-y1 0.333; x1-y0 (1.288)
  # loses y0 to x0 in the one-to-one pass: both pairs are mined, F1 100.
  assert scores[0] == {"a": "x", "b": "y", "aligned": 5, "sentences": 2, "a_to_b": 50.0,
                       "b_to_a": 100.0, "mean": 75.0, "mining_f1": 100.0}
  assert (scores[1]["a_to_b"], scores[1]["b_to_a"]) == (100.0, 50.0)
  assert bitext_eval.average(scores) == {"a_to_b": 75.0, "b_to_a": 75.0, "mean": 75.0,
                                         "mining_f1": 100.0}


def test_mining_f1_finds_the_aligned_rows_and_misses_a_shifted_alignment():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(12, 16))
  b = a + 0.1 * rng.normal(size=a.shape)  # row i of b translates row i of a
  assert bitext_eval.mining_f1(a, b) == 100.0
  assert bitext_eval.mining_f1(a, np.roll(b, 1, axis=0)) == 0.0  # every mined pair off by one
  half = np.concatenate([b[:6], np.roll(b[6:], 1, axis=0)])  # the last 6 rows shifted
  assert 40.0 <= bitext_eval.mining_f1(a, half) <= 67.0  # 6 right of 12: F1 at most 2/3


def test_command_line_with_relative_paths(ckpt, tmp_path):
  _need(BIBLE)
  cmd = [sys.executable, "-m", "polyglot.eval.bitext",
         f"--checkpoint={os.path.relpath(ckpt, tmp_path)}",
         f"--bible={os.path.relpath(BIBLE, tmp_path)}", "--languages=swh_Latn,est_Latn",
         "--books=JUD,REV", "--max_pairs=8", "--output=results/bible.json"]
  proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  report = json.loads((tmp_path / "results" / "bible.json").read_text("utf-8"))
  assert report["settings"]["checkpoint"] == str(ckpt)
  assert report["settings"]["bible"] == str(BIBLE) and report["settings"]["books"] == ["JUD",
                                                                                        "REV"]
  pair, = report["pairs"]
  assert pair["aligned"] == len(bible_pairs("swh_Latn", "est_Latn", "JUD")) + len(
      bible_pairs("swh_Latn", "est_Latn", "REV"))
  assert proc.stdout.splitlines()[2].split()[:2] == ["swh_Latn-est_Latn", "8"]


@pytest.mark.parametrize("flags,code,message", [
    (["--bible=BIBLE", "--languages=acu_Latn,xyz_Latn"], 1,
     "unknown language 'xyz_Latn' in BIBLE; available: acu_Latn, agr_Latn,"),
    (["--bible=BIBLE", "--languages=acu_Latn,swh_Latn", "--books=REV,XYZ"], 1,
     "BIBLE/acu_Latn.tsv has no verses of book XYZ; its books: MAT, MAR,"),
    (["--bible=BIBLE", "--languages=swh_Latn,gla_Latn"], 1, "gla_Latn.tsv has no verses of "
     "book REV"),
    (["--files=ONE,ONE"], 1, "has 1 aligned sentence(s); retrieval needs at least 2"),
    (["--tatoeba=BIBLE", "--languages=est"], 1, "unknown language 'est' in BIBLE; available: "
     "none"),
    (["--bible=BIBLE", "--languages=acu_Latn,swh_Latn", "--checkpoint=/nonexistent/run"], 1,
     "no checkpoint in /nonexistent/run"),
    (["--bible=BIBLE", "--languages=acu_Latn,swh_Latn", "--max_pairs=4", "--layer=3"], 2,
     "--layer=3 is out of range for the checkpoint's 2-layer encoder: pass --layer=<0..2>"),
    (["--bible=BIBLE", "--languages=acu_Latn,swh_Latn", "--max_seq_length=2"], 2,
     "--max_seq_length=2 is invalid: use >= 3"),
    (["--languages=acu_Latn,swh_Latn"], 2, "one of the arguments --bible --tatoeba --files is "
     "required"),
    (["--files=ONE,ONE", "--books=REV"], 2, "--books selects verses of --bible"),
    (["--bible=BIBLE", "--languages=acu_Latn"], 2, "--bible needs --languages with at least two"),
])
def test_bad_input_is_one_error_line(ckpt, tmp_path, capsys, flags, code, message):
  _need(BIBLE)
  one = tmp_path / "one.txt"
  one.write_text("Habari ya dunia\n", "utf-8")
  args = [f.replace("BIBLE", str(BIBLE)).replace("ONE", str(one)) for f in flags]
  if not any(a.startswith("--checkpoint") for a in args):
    args.insert(0, f"--checkpoint={ckpt}")
  got, stdout, stderr = run_main(capsys, args)
  errors = hf_testing.error_lines(stderr)
  assert (got, stdout) == (code, "") and len(errors) == 1, stderr
  assert message.replace("BIBLE", str(BIBLE)) in errors[0]


@pytest.mark.parametrize("kwargs,message", [
    (dict(bible="b", files=("x", "y")), "BitextConfig sets BitextConfig.bible and "
     "BitextConfig.files: keep one source"),
    (dict(bible="b", languages=["acu_Latn"]), "BitextConfig.bible needs BitextConfig.languages "
     "with at least two languages"),
    (dict(files=["x"]), "BitextConfig.files=x is invalid: pass two line-aligned files"),
    (dict(tatoeba="t", languages=("est", "est")), "BitextConfig.languages lists est more than "
     "once"),
    (dict(files=("x", "y"), books=("REV",)), "BitextConfig.books selects verses of "
     "BitextConfig.bible"),
    (dict(files=("x", "y"), max_pairs=1), "BitextConfig.max_pairs=1 is invalid: use >= 2"),
    (dict(files=("x", "y"), max_seq_length=2), "BitextConfig.max_seq_length=2 is invalid"),
    (dict(files=("x", "y"), pooling="max"), "BitextConfig.pooling='max' is invalid"),
])
def test_bad_config_names_the_field(kwargs, message):
  with pytest.raises(ConfigError) as e:
    bitext_eval.BitextConfig(**kwargs)
  assert message in str(e.value)


@pytest.mark.parametrize("bindings,code,message", [
    (["BitextConfig.bible='BIBLE'", "BitextConfig.languages=['acu_Latn', 'xyz_Latn']"], 1,
     "unknown language 'xyz_Latn' in BIBLE; available: acu_Latn,"),
    (["BitextConfig.bible='BIBLE'", "BitextConfig.languages=['acu_Latn', 'swh_Latn']",
      "BitextConfig.layer=3"], 2, "BitextConfig.layer=3 is out of range for the checkpoint's "
     "2-layer encoder: pass BitextConfig.layer=<0..2>"),
])
def test_pretraining_with_a_bad_bitext_stops_before_writing(tmp_path, capsys, bindings, code,
                                                            message):
  """A run's bitext is read and its settings fitted before anything is written: one error
  line, and no workdir."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import train  # pylint: disable=g-import-not-at-top
  _need(BIBLE)
  flags = ["--gin.RunConfig.bitext=@BitextConfig()", "--gin.NUM_STEPS=2",
           *(f"--gin.{b.replace('BIBLE', str(BIBLE))}" for b in bindings)]
  capsys.readouterr()
  root = logging.getLogger()
  handlers, level = root.handlers[:], root.level
  try:  # train.main sets up logging and gin: put them back for the tests that follow
    got = train.main([f"--workdir={tmp_path / 'run'}", *flags])
  finally:
    root.handlers[:] = handlers
    root.setLevel(level)
    gin.clear_config()
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert got == code and len(errors) == 1, errors
  assert message.replace("BIBLE", str(BIBLE)) in errors[0]
  assert not (tmp_path / "run").exists()


def test_eval_command_takes_the_bitext_flags(ckpt, capsys):
  """`python -m polyglot.eval --benchmark=bitext` (as argparse spells it: `=` or a space,
  or abbreviated) is this command: its errors name its flags."""
  from polyglot.eval import __main__ as eval_main  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  for argv in (["--benchmark=bitext", f"--checkpoint={ckpt}", "--languages=a,b"],
               ["--benchmark", "bitext", f"--checkpoint={ckpt}", "--languages=a,b"],
               [f"--checkpoint={ckpt}", "--bench=bitext", "--languages=a,b"]):
    try:
      code = eval_main.main(argv)
    except SystemExit as e:
      code = e.code
    errors = hf_testing.error_lines(capsys.readouterr().err)
    assert code == 2 and len(errors) == 1, errors
    assert "one of the arguments --bible --tatoeba --files is required" in errors[0]
