"""`python -m polyglot.fill_mask` equals Hugging Face's fill-mask pipeline on the exported model."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it: nothing is fetched

import numpy as np
import pytest

import hf_testing
import polyglot
from polyglot import fill_mask, models
from polyglot.data import vocab as vocab_lib

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Everyone has the right to <mask>.",
    "<mask> ni haki ya kila mtu kupata elimu.",
    "Все люди рождаются <mask> и равными в своем достоинстве и <mask>.",
    "人人生而<mask>，在尊严和权利上一律平等。",
    "Tous les êtres humains naissent libres et égaux en <mask>",
    "<mask><mask>s, and   spaces <mask>  ",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(checkpoint workdir, exported HF directory) of a tiny MLM with peaked predictions: a
  wide decoder bias keeps the top-k apart by far more than float32 noise."""
  vocab = vocab_lib.default_vocabulary()
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  params = hf_testing.random_params("masked_lm", cfg, seed=5)
  params["lm_head"]["bias"] = np.random.default_rng(5).normal(
      0.0, 2.0, vocab.vocab_size).astype(np.float32)
  root = tmp_path_factory.mktemp("fill_mask")
  hf_testing.save_checkpoint(root / "ckpt", "masked_lm", cfg, vocab, params=params)
  assert hf_testing.run_tool("convert_to_hf", f"--checkpoint_dir={root / 'ckpt'}",
                             f"--output_dir={root / 'hf'}") == 0
  return root / "ckpt", root / "hf"


def test_predictions_equal_the_hf_pipeline(setup):
  checkpoint_dir, hf_dir = setup
  loaded = polyglot.load(str(checkpoint_dir))
  pipe = transformers.pipeline("fill-mask", model=str(hf_dir))
  for text in TEXTS:
    assert fill_mask.encode(loaded.vocab, text) == pipe.tokenizer(text)["input_ids"], text
    ours = fill_mask.predict(loaded, text, top_k=5)
    theirs = pipe(text, top_k=5)
    if text.count("<mask>") == 1:
      theirs = [theirs]
    assert len(ours) == len(theirs) == text.count("<mask>")
    for mine, ref in zip(ours, theirs):
      assert [p.token_id for p in mine] == [r["token"] for r in ref], text
      np.testing.assert_allclose([p.score for p in mine], [r["score"] for r in ref], atol=1e-4,
                                 rtol=0)
      assert (-np.diff([p.score for p in mine]) > 1e-5).all()  # an order float noise keeps


def test_command_line_prints_top_k(setup, capsys):
  code = fill_mask.main([TEXTS[0], f"--checkpoint_dir={setup[0]}", "--top_k=3"])
  out = capsys.readouterr().out.splitlines()
  assert code == 0 and out[0] == TEXTS[0] and out[1] == "<mask> 1 of 1:"
  assert len(out) == 5 and all(line.startswith("  0.") for line in out[2:])


@pytest.mark.parametrize("args,code,message", [
    (["Everyone has the right."], 2, "has no <mask>"),
    (["Everyone <mask>", "--top_k=0"], 2, "top_k=0 is invalid"),
    (["Everyone <mask>", "--checkpoint_dir=/nonexistent/run"], 1, "no checkpoint"),
    (["Everyone <mask>", "--checkpoint_dir=CLASSIFIER"], 2, "fill-mask needs a masked_lm"),
    (["Everyone <mask>", "--top_k=x"], 2, "invalid int value"),
    (["Everyone has the right to <mask>. " * 12], 2, "the model takes at most 64: shorten it"),
])
def test_bad_input_is_one_line_and_non_zero(setup, tmp_path, capsys, args, code, message):
  vocab = vocab_lib.default_vocabulary()
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  hf_testing.save_checkpoint(tmp_path, "sequence_classification", cfg, vocab, labels=["a", "b"])
  args = [a.replace("CLASSIFIER", str(tmp_path)) for a in args]
  if not any(a.startswith("--checkpoint_dir") for a in args):
    args.append(f"--checkpoint_dir={setup[0]}")
  try:
    got = fill_mask.main(args)
  except SystemExit as e:  # argparse
    got = e.code
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert got == code and len(errors) == 1 and message in errors[0], errors
