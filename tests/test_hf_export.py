"""Hugging Face interchange: export and import of every head, tokenizers, continued pretraining.

polyglot -> HF -> polyglot is bit-identical; exported models compute polyglot's
outputs (float32, 1e-4); HF's tokenizers give polyglot's ids on the embedded
corpus; a randomly initialised HF model imports and continues MLM pretraining
through `python -m polyglot.train` and gin/runs/continue_from_hf.gin.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it: nothing is fetched

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_testing
import polyglot
from polyglot import models, sharding, train
from polyglot.convert import export, hf
from polyglot.data import vocab as vocab_lib
from polyglot.errors import CheckpointError, ConfigError, ConversionError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

LABELS = ["O", "B-PER", "I-PER"]
KINDS = {"masked_lm": None, "sequence_classification": LABELS,
         "token_classification": LABELS, "question_answering": None, "multiple_choice": None}
AUTO = {"masked_lm": "AutoModelForMaskedLM",
        "sequence_classification": "AutoModelForSequenceClassification",
        "multiple_choice": "AutoModelForMultipleChoice",
        "token_classification": "AutoModelForTokenClassification",
        "question_answering": "AutoModelForQuestionAnswering"}
SCRIPTS = ("eng_Latn", "rus_Cyrl", "arb_Arab", "cmn_Hans", "hin_Deva", "amh_Ethi")
CONTINUE_LANGS = ("eng_Latn", "fra_Latn", "spa_Latn", "ita_Latn", "swh_Latn", "yor_Latn")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, vocab):
  """kind -> (checkpoint workdir, HF directory, params) of a random tiny model per head."""
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  root = tmp_path_factory.mktemp("export")
  out = {}
  for seed, (kind, labels) in enumerate(KINDS.items()):
    params = hf_testing.save_checkpoint(root / kind, kind, cfg, vocab, labels=labels, seed=seed)
    code = hf_testing.run_tool("convert_to_hf", f"--checkpoint_dir={root / kind}",
                               f"--output_dir={root / kind}-hf")
    assert code == 0
    out[kind] = (root / kind, root / f"{kind}-hf", params)
  return out


def read_config(directory: pathlib.Path) -> dict:
  return json.loads((directory / "config.json").read_text())


def test_config_and_files_are_xlmr(exported, vocab):
  for kind, (_, hf_dir, _) in exported.items():
    assert {p.name for p in hf_dir.iterdir()} == set(export.ENTRIES)
    config = read_config(hf_dir)
    assert config["architectures"] == [hf.HF_ARCHITECTURES[kind]]
    assert (config["model_type"], config["vocab_size"], config["max_position_embeddings"],
            config["type_vocab_size"], config["layer_norm_eps"], config["pad_token_id"]) == (
                "xlm-roberta", vocab.vocab_size, 64 + 2, 1, 1e-5, 1)
    if KINDS[kind]:
      assert config["id2label"] == {str(i): l for i, l in enumerate(LABELS)}
    else:
      assert "id2label" not in config
    assert (hf_dir / "sentencepiece.bpe.model").read_bytes() == vocab.model_bytes


def hf_outputs(model, ids: np.ndarray, kind: str) -> list[np.ndarray]:
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids).long(),
                attention_mask=torch.from_numpy(ids != 1).long())
  if kind == "question_answering":
    return [out.start_logits.numpy(), out.end_logits.numpy()]
  return [out.logits.numpy()]


@pytest.mark.parametrize("kind", list(KINDS))
def test_exported_model_computes_polyglot_outputs(exported, vocab, corpus, kind):
  checkpoint_dir, hf_dir, _ = exported[kind]
  theirs, info = getattr(transformers, AUTO[kind]).from_pretrained(hf_dir,
                                                                    output_loading_info=True)
  assert type(theirs).__name__ == hf.HF_ARCHITECTURES[kind]
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
  if kind == "masked_lm":  # the decoder is the word embedding matrix itself
    assert (theirs.lm_head.decoder.weight.data_ptr()
            == theirs.roberta.embeddings.word_embeddings.weight.data_ptr())
  ours = polyglot.load(str(checkpoint_dir)).model
  ids = hf_testing.batch(vocab, [corpus.texts[lang][0][:40 + 15 * i]
                                 for i, lang in enumerate(SCRIPTS)], 40)
  assert (ids == vocab.pad_id).any() and (ids != vocab.pad_id).all(axis=1).any()
  if kind == "multiple_choice":
    ids = ids.reshape(3, 2, -1)  # 3 examples of 2 choices
  out, _ = ours(jnp.asarray(ids))
  ours_out = [np.asarray(o) for o in (out if kind == "question_answering" else (out,))]
  for a, b in zip(ours_out, hf_outputs(theirs.eval(), ids, kind)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip_through_hf_is_bit_identical(exported, vocab, kind, tmp_path):
  _, hf_dir, params = exported[kind]
  assert hf_testing.run_tool("convert_from_hf", f"--hf_dir={hf_dir}",
                             f"--output_dir={tmp_path}") == 0
  back = polyglot.load(str(tmp_path))
  assert back.step == 0 and back.meta["model_kind"] == kind
  assert back.meta.get("labels") == KINDS[kind]
  assert back.config == models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  assert back.vocab.model_bytes == vocab.model_bytes
  assert (tmp_path / "sentencepiece.bpe.model").read_bytes() == vocab.model_bytes
  again = hf.params_of(back.model)
  assert jax.tree.structure(again) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)


def copy_without_weights(hf_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  target = tmp_path / "hf"
  shutil.copytree(hf_dir, target)
  (target / "model.safetensors").unlink()
  return target


def test_pytorch_bin_imports_by_weights_only_unpickling(exported, tmp_path):
  _, hf_dir, params = exported["masked_lm"]
  state = transformers.AutoModelForMaskedLM.from_pretrained(hf_dir).state_dict()
  target = copy_without_weights(hf_dir, tmp_path)
  torch.save(state, target / "pytorch_model.bin")
  assert hf_testing.run_tool("convert_from_hf", f"--hf_dir={target}",
                             f"--output_dir={tmp_path / 'out'}") == 0
  again = hf.params_of(polyglot.load(str(tmp_path / "out")).model)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
    assert np.array_equal(a, b)


def test_sharded_safetensors_import(exported, tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  _, hf_dir, params = exported["token_classification"]
  state = load_file(str(hf_dir / "model.safetensors"))
  target = copy_without_weights(hf_dir, tmp_path)
  names = sorted(state)
  weight_map = {}
  for i, part in enumerate((names[:len(names) // 2], names[len(names) // 2:])):
    shard = f"model-{i + 1:05d}-of-00002.safetensors"
    save_file({k: state[k] for k in part}, str(target / shard), metadata={"format": "pt"})
    weight_map |= {k: shard for k in part}
  (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  assert hf_testing.run_tool("convert_from_hf", f"--hf_dir={target}",
                             f"--output_dir={tmp_path / 'out'}") == 0
  again = hf.params_of(polyglot.load(str(tmp_path / "out")).model)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
    assert np.array_equal(a, b)


class Payload:
  """Unpickling this would create `marker`: pickled code that must never run."""

  def __init__(self, marker: pathlib.Path):
    self.marker = marker

  def __reduce__(self):
    return (pathlib.Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_never_runs(exported, tmp_path, capsys):
  target = copy_without_weights(exported["masked_lm"][1], tmp_path)
  marker = tmp_path / "pickled_code_ran"
  torch.save({"roberta.embeddings.word_embeddings.weight": torch.zeros(2, 2),
              "payload": Payload(marker)}, target / "pytorch_model.bin")
  assert hf_testing.run_tool("convert_from_hf", f"--hf_dir={target}",
                             f"--output_dir={tmp_path / 'out'}") == 1
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert len(errors) == 1 and "never unpickles" in errors[0]
  assert not marker.exists()


def test_tokenizers_give_polyglot_ids_on_the_embedded_corpus(exported, vocab, corpus, tmp_path):
  """Slow: converted from sentencepiece.bpe.model alone; fast: the exported tokenizer.json."""
  hf_dir = exported["masked_lm"][1]
  vocab.save(tmp_path)
  slow = transformers.XLMRobertaTokenizer.from_pretrained(tmp_path)
  fast = transformers.AutoTokenizer.from_pretrained(hf_dir)
  rust = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
  assert fast.model_max_length == 64 and len(fast) == vocab.vocab_size
  assert (fast.bos_token_id, fast.pad_token_id, fast.eos_token_id, fast.unk_token_id,
          fast.mask_token_id) == (0, 1, 2, 3, vocab.mask_id)
  texts = [line for lines in corpus.texts.values() for line in lines[:2]]
  texts += ["smile \U0001F600 and \U0002A700", "  extra   spaces\tand\nlines  ", "ＦＵＬＬ width", ""]
  assert len(corpus.texts) >= 50 and vocab.unk_id in vocab.encode(texts[-4])
  for text in texts:
    want = [vocab.bos_id, *vocab.encode(text), vocab.eos_id]
    assert slow(text)["input_ids"] == want, text
    assert fast(text)["input_ids"] == want, text
    assert rust.encode(text).ids == want, text


@pytest.mark.parametrize("preset,message", [
    ("moe_tiny", "Mixture-of-Experts model (4 experts): transformers has no class for it"),
    ("tiny", "holds a 8000-id vocabulary for a 1000-id model"),
])
def test_export_refuses_what_hf_cannot_hold(vocab, tmp_path, capsys, preset, message):
  hf_testing.save_checkpoint(tmp_path / "ckpt", "masked_lm", models.preset(preset), vocab)
  code = hf_testing.run_tool("convert_to_hf", f"--checkpoint_dir={tmp_path / 'ckpt'}",
                             f"--output_dir={tmp_path / 'hf'}")
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert code == 1 and len(errors) == 1 and message in errors[0], errors
  assert not (tmp_path / "hf").exists()


def test_output_may_not_be_the_input_or_a_file(exported, tmp_path):
  checkpoint_dir = exported["masked_lm"][0]
  with pytest.raises(ConversionError, match="is the input"):
    export.export_checkpoint(checkpoint_dir, checkpoint_dir)
  (tmp_path / "file").write_text("")
  with pytest.raises(ConversionError, match="is a file"):
    export.export_checkpoint(checkpoint_dir, tmp_path / "file")


def test_output_directory_needs_overwrite(exported, tmp_path, capsys):
  checkpoint_dir = exported["question_answering"][0]
  (tmp_path / "keep.txt").write_text("mine")
  (tmp_path / "config.json").write_text("{}")
  args = (f"--checkpoint_dir={checkpoint_dir}", f"--output_dir={tmp_path}")
  assert hf_testing.run_tool("convert_to_hf", *args) == 1
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert len(errors) == 1 and "not empty" in errors[0] and "--overwrite" in errors[0]
  assert (tmp_path / "config.json").read_text() == "{}"
  assert hf_testing.run_tool("convert_to_hf", *args, "--overwrite") == 0
  assert read_config(tmp_path)["architectures"] == ["XLMRobertaForQuestionAnswering"]
  assert (tmp_path / "keep.txt").read_text() == "mine"


def test_bad_arguments_exit_2_with_one_line():
  proc = subprocess.run([sys.executable, str(hf_testing.REPO / "tools" / "convert_from_hf.py"),
                         "--hf_dir=x"], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert hf_testing.error_lines(proc.stderr) == proc.stderr.strip().splitlines()
  assert "--output_dir" in proc.stderr


def _edit_json(path: pathlib.Path, **changes) -> None:
  path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _t5_layout_model(path: pathlib.Path, corpus) -> None:
  import io  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus.texts["eng_Latn"]),
                                 model_writer=out, vocab_size=60, pad_id=0, eos_id=1, unk_id=2,
                                 bos_id=-1, minloglevel=2)
  path.write_bytes(out.getvalue())


def _drop_heads(path: pathlib.Path) -> None:
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  state = {k: v for k, v in load_file(str(path)).items() if k.startswith("roberta.")}
  save_file(state, str(path), metadata={"format": "pt"})


def _replace_weights(directory: pathlib.Path, name: str, write) -> None:
  (directory / "model.safetensors").unlink()
  write(directory / name)


BAD_HF_DIRS = {
    "missing": ("masked_lm", lambda d, c: shutil.rmtree(d), "does not exist"),
    "no_config": ("masked_lm", lambda d, c: (d / "config.json").unlink(), "has no config.json"),
    "bert": ("masked_lm", lambda d, c: _edit_json(d / "config.json", model_type="bert"),
             "only XLM-R models"),
    "no_vocabulary": ("masked_lm", lambda d, c: (d / "sentencepiece.bpe.model").unlink(),
                      "has no sentencepiece.bpe.model"),
    "no_mask": ("masked_lm", lambda d, c: _edit_json(d / "config.json", vocab_size=7999),
                "<mask> last"),
    "t5_layout": ("masked_lm", lambda d, c: _t5_layout_model(d / "sentencepiece.bpe.model", c),
                  "not an XLM-R tokenizer"),
    "mask_elsewhere": ("masked_lm", lambda d, c: _edit_json(
        d / "tokenizer.json", added_tokens=[{"id": 5, "content": "<mask>"}]), "at id 5"),
    "bare_encoder": ("masked_lm", lambda d, c: _drop_heads(d / "model.safetensors"),
                     "bare XLMRobertaModel"),
    "no_weights": ("masked_lm", lambda d, c: (d / "model.safetensors").unlink(),
                   "holds no weights"),
    "broken_config": ("masked_lm", lambda d, c: (d / "config.json").write_text("{"),
                      "is not valid JSON"),
    "mask_token": ("masked_lm", lambda d, c: _edit_json(d / "tokenizer_config.json",
                                                        mask_token="[MASK]"),
                   "mask_token '[MASK]'"),
    "empty_index": ("masked_lm", lambda d, c: _replace_weights(
        d, "model.safetensors.index.json", lambda p: p.write_text("{}")), "lists no shards"),
    "corrupt_weights": ("masked_lm", lambda d, c: (d / "model.safetensors").write_bytes(
        b"\x08\x00\x00\x00\x00\x00\x00\x00not json"), "not a readable safetensors file"),
    "tensor_list": ("masked_lm", lambda d, c: _replace_weights(
        d, "pytorch_model.bin", lambda p: torch.save([torch.zeros(2)], p)),
                    "not a state dict of tensors"),
    "missing_shard": ("masked_lm", lambda d, c: _replace_weights(
        d, "model.safetensors.index.json", lambda p: p.write_text(json.dumps(
            {"weight_map": {"lm_head.bias": "model-00001-of-00002.safetensors"}}))),
                      "which is missing"),
    "labels": ("sequence_classification", lambda d, c: _edit_json(
        d / "config.json", id2label={"0": "a", "1": "b"}), "id2label"),
}


@pytest.mark.parametrize("case", list(BAD_HF_DIRS))
def test_bad_hf_directories_are_one_line_errors(exported, corpus, tmp_path, capsys, case):
  kind, damage, message = BAD_HF_DIRS[case]
  hf_dir = tmp_path / "hf"
  shutil.copytree(exported[kind][1], hf_dir)
  damage(hf_dir, corpus)
  code = hf_testing.run_tool("convert_from_hf", f"--hf_dir={hf_dir}",
                             f"--output_dir={tmp_path / 'out'}")
  errors = hf_testing.error_lines(capsys.readouterr().err)
  assert code == 1 and len(errors) == 1 and message in errors[0], errors
  assert not (tmp_path / "out").exists()  # inputs are checked before anything is written


def test_init_from_takes_the_checkpoints_model_and_checks_its_vocabulary(exported, vocab,
                                                                         corpus, tmp_path):
  gin_model = models.preset("base", dtype="bfloat16", remat="full")
  run = train.RunConfig(model=gin_model, train=train.TrainConfig(
      init_from=str(exported["masked_lm"][0]), mixture="embedded_other_vocabulary"))
  cfg = train.init_config(run)
  assert cfg == models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64, dtype="bfloat16",
                              remat="full")
  mesh = sharding.make_mesh(run.mesh)
  setup = train.make_setup(cfg, run, mesh)
  other = vocab_lib.train(corpus.texts["eng_Latn"],
                          vocab_lib.VocabConfig(vocab_size=120))
  with pytest.raises(ConfigError, match="another vocabulary than the mixture"):
    train.fresh_state(setup, cfg, run, mesh, other)
  with pytest.raises(ConfigError, match="holds a sequence_classification model"):
    train.init_config(train.RunConfig(train=train.TrainConfig(
        init_from=str(exported["sequence_classification"][0]))))
  with pytest.raises(CheckpointError, match="holds no checkpoint"):
    train.init_config(train.RunConfig(train=train.TrainConfig(init_from=str(tmp_path))))


def losses(workdir: pathlib.Path) -> dict[int, float]:
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_continued_pretraining_from_a_random_hf_model(vocab, corpus, tmp_path):
  text_dir = tmp_path / "text"
  text_dir.mkdir()
  for lang in CONTINUE_LANGS:
    (text_dir / f"{lang}.txt").write_text("\n".join(corpus.texts[lang]) + "\n")
  torch.manual_seed(0)
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=64)
  theirs = transformers.XLMRobertaForMaskedLM(
      transformers.XLMRobertaConfig(**hf.config_to_hf(cfg)))
  theirs.save_pretrained(tmp_path / "hf")
  vocab.save(tmp_path / "hf")
  init = tmp_path / "imported"
  assert hf_testing.run_tool("convert_from_hf", f"--hf_dir={tmp_path / 'hf'}",
                             f"--output_dir={init}") == 0
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run([
      sys.executable, "-m", "polyglot.train", "--gin_file=runs/continue_from_hf.gin",
      f"--workdir={workdir}", f"--gin.INIT_FROM='{init}'",
      f"--gin.VOCAB='{init / 'sentencepiece.bpe.model'}'", f"--gin.TEXT_DIR='{text_dir}'",
      "--gin.MeshConfig.fsdp=1", "--gin.MeshConfig.platform=None",  # a GPU mesh, on 1 CPU
      "--gin.COMPUTE_DTYPE='float32'", "--gin.NUM_STEPS=10",
      "--gin.BATCH_SIZE=8", "--gin.TrainConfig.seq_len=64", "--gin.LEARNING_RATE=3e-3",
      "--gin.WARMUP_STEPS=2", "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.eval_every=0",
      "--gin.TrainConfig.shuffle_buffer=32", "--gin.CheckpointConfig.save_every=10"],
      cwd=hf_testing.REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = losses(workdir)
  assert np.mean([got[s] for s in (8, 9, 10)]) < np.mean([got[s] for s in (1, 2, 3)]) - 0.3
  trained = polyglot.load(str(workdir))
  assert trained.step == 10 and trained.config.hidden_size == 64  # the checkpoint's, not base's
  assert trained.vocab == vocab
  start = theirs.roberta.embeddings.word_embeddings.weight.detach().numpy().ravel()
  now = np.asarray(trained.model.encoder.embeddings.word[...]).ravel()
  # Continued from the HF weights: a fresh initialisation would correlate ~0 (512k values).
  assert np.corrcoef(start, now)[0, 1] > 0.5
