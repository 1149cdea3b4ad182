"""Vocabulary extension (Glot500 recipe): old ids, pieces and rows kept; new languages covered.

The base is a tiny MLM checkpoint whose vocabulary knows six European and
East African languages in Latin script; the new languages are Zulu and Xhosa
(same script, unseen words) and Amharic (an unseen script).
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it: nothing is fetched

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2

import hf_testing
import polyglot
from polyglot import models
from polyglot.convert import hf, vocab_extension
from polyglot.data import vocab as vocab_lib
from polyglot.errors import ConfigError, ConversionError, DataError

BASE_LANGS = ("eng_Latn", "fra_Latn", "spa_Latn", "ita_Latn", "swh_Latn", "deu_Latn")
NEW_LANGS = ("zul_Latn", "xho_Latn", "amh_Ethi")


@pytest.fixture(scope="module")
def base(tmp_path_factory, corpus):
  """(checkpoint workdir, vocabulary, params) of a tiny MLM that knows BASE_LANGS."""
  vocab = vocab_lib.train([l for lang in BASE_LANGS for l in corpus.texts[lang]],
                          vocab_lib.VocabConfig(vocab_size=400))
  workdir = tmp_path_factory.mktemp("base")
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  params = hf_testing.save_checkpoint(workdir, "masked_lm", cfg, vocab)
  return workdir, vocab, params


@pytest.fixture(scope="module")
def extended(tmp_path_factory, corpus, base):
  """init -> the extended checkpoint loaded: "mean" from a text directory, "normal" from a
  registered mixture of the same languages."""
  root = tmp_path_factory.mktemp("extended")
  text_dir = root / "new_languages"
  text_dir.mkdir()
  for lang in NEW_LANGS:
    (text_dir / f"{lang}.txt").write_text("\n".join(corpus.texts[lang]) + "\n")
  import tasks  # pylint: disable=g-import-not-at-top
  tasks.register_text_directory(text_dir, name="new_languages_mixture")
  common = (f"--checkpoint_dir={base[0]}", "--vocab_size=500", "--sample_size=1000")
  out = {}
  for init, source in (("mean", f"--text_dir={text_dir}"),
                       ("normal", "--mixture=new_languages_mixture")):
    code = hf_testing.run_tool("extend_vocab", *common, source, f"--init={init}",
                               f"--output_dir={root / init}")
    assert code == 0
    out[init] = polyglot.load(str(root / init))
  return out


def proto(vocab) -> sentencepiece_model_pb2.ModelProto:
  p = sentencepiece_model_pb2.ModelProto()
  p.ParseFromString(vocab.model_bytes)
  return p


def pieces(vocab) -> list[str]:
  """Piece of every id in XLM-R's layout: specials, SentencePiece pieces 3.., `<mask>`."""
  return ["<s>", "<pad>", "</s>", "<unk>", *(p.piece for p in proto(vocab).pieces[3:]), "<mask>"]


def flat(params) -> dict:
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}


RESIZED = ("['encoder']['embeddings']['word']", "['lm_head']['bias']")


@pytest.mark.parametrize("init", ["mean", "normal"])
def test_old_ids_pieces_and_rows_are_kept(base, extended, init):
  _, old, params = base
  new = extended[init]
  added = new.vocab.vocab_size - old.vocab_size
  assert added > 50 and new.config.vocab_size == new.vocab.vocab_size
  assert pieces(new.vocab)[:old.mask_id] == pieces(old)[:old.mask_id]
  assert pieces(new.vocab)[-1] == "<mask>" and new.vocab.mask_id == new.vocab.vocab_size - 1
  old_proto, new_proto = proto(old), proto(new.vocab)
  assert [(p.piece, p.score, p.type) for p in new_proto.pieces[:len(old_proto.pieces)]] == [
      (p.piece, p.score, p.type) for p in old_proto.pieces]
  assert new_proto.normalizer_spec == old_proto.normalizer_spec
  assert new_proto.trainer_spec.vocab_size == len(new_proto.pieces)
  got, want = flat(hf.params_of(new.model)), flat(params)
  assert got.keys() == want.keys()
  for key in RESIZED:  # old rows unchanged; <mask>'s row moved to the new last id
    assert got[key].shape[0] == want[key].shape[0] + added
    assert np.array_equal(got[key][:old.mask_id], want[key][:old.mask_id])
    assert np.array_equal(got[key][-1], want[key][-1])
  for key in want.keys() - set(RESIZED):
    assert np.array_equal(got[key], want[key]), key


def test_new_languages_take_fewer_pieces_and_no_unknowns(base, extended, corpus):
  _, old, _ = base
  new = extended["mean"].vocab
  for lang in ("zul_Latn", "xho_Latn"):
    before = sum(len(old.encode(line)) for line in corpus.texts[lang])
    after = sum(len(new.encode(line)) for line in corpus.texts[lang])
    assert after < 0.8 * before, (lang, before, after)
  # An unseen script: all <unk> before; after, only characters too rare for SentencePiece's
  # character_coverage (or only in the held-out line) may stay unknown.
  ethiopic = lambda text: sum("\u1200" <= ch <= "\u137f" for ch in text)
  lines = corpus.texts["amh_Ethi"]
  assert sum(ethiopic(old.decode(old.encode(line))) for line in lines) == 0
  kept = sum(ethiopic(new.decode(new.encode(line))) for line in lines)
  assert kept > 0.98 * sum(ethiopic(line) for line in lines)


def test_mean_init_averages_the_old_segmentation(base, extended):
  _, old, params = base
  new = extended["mean"]
  added = pieces(new.vocab)[old.mask_id:-1]
  word, bias = params["encoder"]["embeddings"]["word"], params["lm_head"]["bias"]
  rows = np.asarray(new.model.encoder.embeddings.word[...])[old.mask_id:-1]
  new_bias = np.asarray(new.model.lm_head.bias[...])[old.mask_id:-1]
  known = lambda ch: old.unk_id not in old.encode(ch)
  fallback = 0
  for piece, ids, row, b in zip(added, vocab_extension.segment(old, added), rows, new_bias):
    # The segmentation spells the piece's own characters (those the base knows), no prefix.
    assert "".join(pieces(old)[i] for i in ids) == "".join(
        ch for ch in piece if ch == "\u2581" or known(ch))
    if not ids:  # only characters the base does not know (Amharic): N(0, 0.02^2), bias 0
      fallback += 1
      assert b == 0 and 0 < np.abs(row).max() < 0.02 * 6
      continue
    np.testing.assert_allclose(row, word[ids].mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b, bias[ids].mean(), rtol=1e-6, atol=1e-7)
  assert 0 < fallback < len(added)


def test_normal_init_is_glot500s(base, extended):
  _, old, _ = base
  new = extended["normal"]
  rows = np.asarray(new.model.encoder.embeddings.word[...])[old.mask_id:-1]
  assert abs(rows.std() - 0.02) < 0.002 and abs(rows.mean()) < 0.002
  assert not np.asarray(new.model.lm_head.bias[...])[old.mask_id:-1].any()


def test_extended_model_runs_and_hf_tokenizes_it_alike(extended, corpus, tmp_path):
  transformers = pytest.importorskip("transformers")
  loaded = extended["mean"]
  lines = [line for lang in NEW_LANGS for line in corpus.texts[lang]]
  ids = hf_testing.batch(loaded.vocab, lines[:4], 48)
  logits, _ = loaded.model(jnp.asarray(ids))
  assert logits.shape == (4, 48, loaded.vocab.vocab_size) and np.isfinite(logits).all()
  loaded.vocab.save(tmp_path)
  tok = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path)
  assert len(tok) == loaded.vocab.vocab_size and tok.mask_token_id == loaded.vocab.mask_id
  for line in lines:
    assert tok(line)["input_ids"] == [0, *loaded.vocab.encode(line), 2]


def test_merge_and_config_refuse_bad_input(base):
  _, old, _ = base
  with pytest.raises(DataError, match="adds no piece"):
    vocab_extension.merge(old, old)
  with pytest.raises(ConfigError, match="ExtensionConfig.init"):
    vocab_extension.ExtensionConfig(init="zeros")


@pytest.mark.parametrize("args,code,message", [
    (["--init=zeros"], 2, "invalid choice"),
    ([], 2, "one of the arguments --text_dir --mixture is required"),
    (["--mixture=no_such_mixture"], 1, "unknown mixture or task 'no_such_mixture'"),
])
def test_bad_arguments_are_one_line_errors(base, tmp_path, capsys, args, code, message):
  got = hf_testing.run_tool("extend_vocab", f"--checkpoint_dir={base[0]}",
                            f"--output_dir={tmp_path / 'out'}", *args)
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert got == code and len(errors) == 1 and message in errors[0], errors


def test_a_non_empty_output_is_refused_before_training(base, tmp_path, capsys):
  (tmp_path / "notes.txt").write_text("mine")
  got = hf_testing.run_tool("extend_vocab", f"--checkpoint_dir={base[0]}",
                            f"--output_dir={tmp_path}", "--mixture=no_such_mixture")
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert got == 1 and len(errors) == 1 and "not empty" in errors[0], errors


def test_a_classifier_checkpoint_is_refused(base, corpus, tmp_path, capsys):
  _, vocab, _ = base
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  hf_testing.save_checkpoint(tmp_path / "qa", "question_answering", cfg, vocab)
  new = vocab_lib.train(corpus.texts["zul_Latn"], vocab_lib.VocabConfig(vocab_size=150))
  with pytest.raises(ConversionError, match="holds a question_answering model"):
    vocab_extension.extend_checkpoint(tmp_path / "qa", new, tmp_path / "out")


def test_an_rtd_checkpoint_extends_to_its_encoder_and_mlm_head(base, corpus, tmp_path):
  """The generator and detection head stay behind; the record of the objectives (RTD alone:
  an untrained MLM head) goes along, so the export still writes the encoder alone."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from polyglot import api, checkpoint  # pylint: disable=g-import-not-at-top
  from polyglot.models import rtd  # pylint: disable=g-import-not-at-top
  _, vocab, _ = base
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  generator = rtd.generator_config(cfg, 1 / 3)
  params = hf.params_of(models.build("masked_lm", cfg, rngs=nnx.Rngs(0), generator=generator))
  writer = checkpoint.Checkpointer(str(tmp_path / "rtd" / checkpoint.SUBDIR),
                                   checkpoint.CheckpointConfig(async_save=False))
  writer.save(3, params=params, opt_state={"step": np.int32(3)}, vocab=vocab.model_bytes,
              meta={"model_kind": "masked_lm", "model_config": cfg.to_dict(),
                    "generator_config": generator.to_dict(), "objectives": [{"name": "mrtd"}]},
              data=None)
  writer.wait()
  writer.close()
  new = vocab_lib.train(corpus.texts["zul_Latn"], vocab_lib.VocabConfig(vocab_size=150))
  vocab_extension.extend_checkpoint(tmp_path / "rtd", new, tmp_path / "out")
  loaded = polyglot.load(str(tmp_path / "out"))
  got = hf.params_of(loaded.model)
  assert set(got) == {"encoder", "lm_head"} and not api.mlm_head_trained(loaded.meta)
  word = got["encoder"]["embeddings"]["word"]
  assert word.shape[0] > vocab.vocab_size
  np.testing.assert_array_equal(word[:vocab.vocab_size - 1],
                                params["encoder"]["embeddings"]["word"][:vocab.vocab_size - 1])
