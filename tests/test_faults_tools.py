"""Bad input to the tools and `python -m polyglot.fill_mask`: one `error:` line naming the input
and the fix, a non-zero exit, no traceback, and no file lost or changed.

Tests are named after the defect they cover: damaged `.gz`/`.xz` text files; an HF
`config.json` field of the wrong type or value and a tensor of the wrong shape
(tools/convert_from_hf.py); `tools/train_vocab.py --output` checked before training; and
the bad files, paths and flag values a demanding user tries on every tool. Tools run in
this process (`main(argv)`), except where the process boundary matters (the last test).
"""
import gzip
import json
import lzma
import os
import pathlib
import shutil
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub reads it: nothing is fetched

import numpy as np
import pytest

import hf_testing
import tasks
from faults_testing import assert_one_line_error, assert_unchanged, snapshot
from polyglot import fill_mask, models
from polyglot.convert import files, hf
from polyglot.data import sources
from polyglot.data import vocab as vocab_lib
from polyglot.errors import DataError

LANGS = ("eng_Latn", "fra_Latn", "swh_Latn")
TEXT = "".join(f"habari ya dunia, siku {i}\n" for i in range(400)).encode()
QUERY = "roberta.encoder.layer.1.attention.self.query.weight"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus):
  """(checkpoint workdir, HF directory) of a tiny random MLM over a ~200-id vocabulary. The HF
  directory holds what convert_from_hf reads (config.json, model.safetensors,
  sentencepiece.bpe.model), written directly: no transformers needed."""
  pytest.importorskip("torch")  # safetensors.torch reads the weights
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.train([l for lang in LANGS for l in corpus.texts[lang]],
                          vocab_lib.VocabConfig(vocab_size=200))
  cfg = models.preset("tiny", vocab_size=vocab.vocab_size, max_len=32)
  root = tmp_path_factory.mktemp("faults_tools")
  params = hf_testing.save_checkpoint(root / "ckpt", "masked_lm", cfg, vocab)
  hf_dir = root / "hf"
  hf_dir.mkdir()
  files.write_json(hf_dir / "config.json", hf.config_to_hf(cfg))
  save_file(hf.to_hf(params, cfg, "masked_lm"), str(hf_dir / "model.safetensors"),
            metadata={"format": "pt"})
  vocab.save(hf_dir)
  return root / "ckpt", hf_dir


def run(capsys, tool: str, *args: str) -> tuple[int, str]:
  """tools/<tool>.py (or `fill_mask`) run in this process: (exit code, stderr)."""
  if tool == "fill_mask":
    try:
      code = fill_mask.main(list(args))
    except SystemExit as e:  # argparse
      code = e.code
  else:
    code = hf_testing.run_tool(tool, *args)
  return code, capsys.readouterr().err


def hf_copy(tiny, tmp_path: pathlib.Path) -> pathlib.Path:
  hf_dir = tmp_path / "hf"
  shutil.copytree(tiny[1], hf_dir)
  return hf_dir


def convert_from_hf(capsys, hf_dir: pathlib.Path, *needles: str, code: int = 1) -> None:
  """convert_from_hf on `hf_dir` fails with one line holding `needles`; nothing changed or
  written."""
  before = snapshot(hf_dir)
  out = hf_dir.parent / "out"
  got, err = run(capsys, "convert_from_hf", f"--hf_dir={hf_dir}", f"--output_dir={out}")
  assert_one_line_error(got, err, *needles, expect_code=code)
  assert_unchanged(hf_dir, before)
  assert not out.exists()


def test_the_pristine_fixture_converts(tiny, tmp_path, capsys):
  """The damaged copies below fail because of their damage only."""
  hf_dir = hf_copy(tiny, tmp_path)
  code, err = run(capsys, "convert_from_hf", f"--hf_dir={hf_dir}",
                  f"--output_dir={tmp_path / 'out'}")
  assert code == 0, err
  assert (tmp_path / "out" / "checkpoints" / "0").is_dir()


# Defect 1: damaged .txt.gz / .txt.xz, empty files and unknown languages in a text directory.
def _cut(data: bytes) -> bytes:
  return data[: len(data) // 2]


def _flip_crc(data: bytes) -> bytes:
  """A gzip stream whose CRC-32 (the first 4 bytes of its 8-byte trailer) is wrong."""
  return data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]


CORRUPT = {
    "gzip_cut_short": ("sw.txt.gz", _cut(gzip.compress(TEXT, mtime=0)),
                       "ended before the end-of-stream"),
    "gzip_bad_crc": ("sw.txt.gz", _flip_crc(gzip.compress(TEXT, mtime=0)), "CRC check failed"),
    "gzip_not_gzip": ("sw.txt.gz", TEXT, "Not a gzipped file"),
    "xz_cut_short": ("sw.txt.xz", _cut(lzma.compress(TEXT)), "ended before the end-of-stream"),
    "xz_not_xz": ("sw.txt.xz", TEXT, "Input format not supported"),
}


def _text_dir(root: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
  """`root/text` with a good Yoruba file and `name` holding `data`."""
  text_dir = root / "text"
  text_dir.mkdir()
  (text_dir / "yo.txt").write_text("ẹ kú àárọ̀\n" * 3, encoding="utf-8")
  (text_dir / name).write_bytes(data)
  return text_dir


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_compressed_text_file_is_a_data_error_naming_it(case, tmp_path, monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path / "cache"))  # .xz copies are made there
  name, data, reason = CORRUPT[case]
  text_dir = _text_dir(tmp_path, name, data)
  before = snapshot(text_dir)
  with pytest.raises(DataError) as e:
    tasks.register_text_directory(text_dir, name=f"faults_{case}")
  tool = "gzip" if name.endswith(".gz") else "xz"
  message = str(e.value)
  assert "\n" not in message
  for needle in (f"text file {text_dir / name} is not a readable {tool} stream", reason,
                 f"`{tool} -t`", "compress it again"):
    assert needle in message, message
  assert_unchanged(text_dir, before)
  assert not list((tmp_path / "cache").rglob("*.partial"))  # no half-decompressed copy kept


def test_corrupt_gzip_through_train_vocab_is_one_line(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path / "cache"))
  text_dir = _text_dir(tmp_path, "sw.txt.gz", _cut(gzip.compress(TEXT, mtime=0)))
  before = snapshot(tmp_path)
  code, err = run(capsys, "train_vocab", f"--text_dir={text_dir}",
                  f"--output={tmp_path / 'v.model'}")
  assert_one_line_error(code, err, str(text_dir / "sw.txt.gz"), "not a readable gzip stream",
                        expect_code=1)
  assert_unchanged(tmp_path, before)
  assert not (tmp_path / "v.model").exists()


@pytest.mark.parametrize("name,data,needles", [
    ("sw.txt.gz", gzip.compress(b"\n  \n", mtime=0),
     ("sw.txt.gz has no text", "fill it or remove it")),
    ("sw.txt.xz", lzma.compress(b""), ("sw.txt.xz has no text", "fill it or remove it")),
    ("xx.txt", b"hello\n", ("xx.txt", "unknown language code 'xx'", "rename the file")),
], ids=["empty_gz", "empty_xz", "unknown_code"])
def test_empty_or_unknown_language_file_is_a_data_error_naming_it(name, data, needles,
                                                                  tmp_path, monkeypatch):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path / "cache"))
  text_dir = _text_dir(tmp_path, name, data)
  with pytest.raises(DataError) as e:
    sources.text_directory_sources(text_dir)
  assert "\n" not in str(e.value) and str(text_dir / name) in str(e.value)
  for needle in needles:
    assert needle in str(e.value), str(e.value)


# Defect 2: config.json fields and tensor shapes (tools/convert_from_hf.py).
DELETE = object()


def _edit_config(hf_dir: pathlib.Path, **changes) -> None:
  config = json.loads((hf_dir / "config.json").read_text())
  config.update(changes)
  (hf_dir / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                  if v is not DELETE}))


@pytest.mark.parametrize("changes,needles", [
    ({"hidden_size": None}, ("field hidden_size=None is invalid: use a positive integer",)),
    ({"num_hidden_layers": "two"},
     ("field num_hidden_layers='two' is invalid: use a positive integer",)),
    ({"hidden_size": 64.5}, ("field hidden_size=64.5 is invalid",)),
    ({"vocab_size": True}, ("field vocab_size=True is invalid",)),
    ({"layer_norm_eps": "1e-5"}, ("field layer_norm_eps='1e-5' is invalid: use a number > 0",)),
    ({"hidden_dropout_prob": 1.5}, ("hidden_dropout_prob=1.5 is invalid: use a number in [0, 1)",)),
    ({"max_position_embeddings": 4}, ("max_position_embeddings=4 is invalid", "at least 5")),
    ({"num_attention_heads": 5}, ("describes no valid model", "divisible by num_heads")),
    ({"intermediate_size": DELETE}, ("lacks 'intermediate_size'", "add the field")),
])
def test_hf_config_field_of_wrong_type_or_value_is_named(tiny, tmp_path, capsys, changes,
                                                         needles):
  hf_dir = hf_copy(tiny, tmp_path)
  _edit_config(hf_dir, **changes)
  convert_from_hf(capsys, hf_dir, str(hf_dir / "config.json"), *needles)


def test_hf_tensor_of_wrong_shape_is_named_before_any_reshape(tiny, tmp_path, capsys):
  from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top
  hf_dir = hf_copy(tiny, tmp_path)
  path = hf_dir / "model.safetensors"
  state = load_file(str(path))
  state[QUERY] = np.zeros((64, 60), np.float32)  # HF [h*k, d] = (64, 64) for the tiny preset
  save_file(state, str(path), metadata={"format": "pt"})
  convert_from_hf(capsys, hf_dir, f"HF tensor {QUERY} in {path} has shape (64, 60)",
                  "expects (64, 64)", "config.json")


# Defect 3: tools/train_vocab.py --output is checked before training.
@pytest.mark.parametrize("where,needles", [
    ("directory", ("is a directory", "vocab.model")),
    ("under_a_file", ("notes.txt is a file, not a directory", "writable directory")),
])
def test_train_vocab_output_is_checked_before_training(where, needles, tmp_path, capsys,
                                                       monkeypatch):
  out = tmp_path / "out"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  output = out if where == "directory" else out / "notes.txt" / "vocab.model"
  monkeypatch.setattr(vocab_lib, "train_from_mixture",
                      lambda *a: pytest.fail("trained before --output was checked"))
  before = snapshot(tmp_path)
  code, err = run(capsys, "train_vocab", f"--output={output}")
  assert_one_line_error(code, err, f"--output {output}", *needles, expect_code=1)
  assert_unchanged(tmp_path, before)


# Defect 4: what a demanding user tries on every tool.
def _replace_weights(hf_dir: pathlib.Path, name: str, data: bytes) -> None:
  (hf_dir / "model.safetensors").unlink()
  (hf_dir / name).write_bytes(data)


def _directory_instead(path: pathlib.Path) -> None:
  path.unlink()
  path.mkdir()


BAD_HF_FILES = {
    "config_not_utf8": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe{}"),
                        "config.json is not valid JSON", "restore the file"),
    "config_array": (lambda d: (d / "config.json").write_text("[1, 2]"),
                     "config.json holds an array, not a JSON object"),
    "config_directory": (lambda d: _directory_instead(d / "config.json"),
                         "config.json is a directory, not a JSON file"),
    "garbage_safetensors": (lambda d: (d / "model.safetensors").write_bytes(os.urandom(64)),
                            "model.safetensors is not a readable safetensors file", "copy it"),
    "empty_safetensors": (lambda d: (d / "model.safetensors").write_bytes(b""),
                          "model.safetensors is not a readable safetensors file"),
    "garbage_vocabulary": (lambda d: (d / "sentencepiece.bpe.model").write_bytes(b"\x00garbage"),
                           "sentencepiece.bpe.model is not an XLM-R tokenizer"),
    "garbage_pytorch_bin": (lambda d: _replace_weights(d, "pytorch_model.bin", b"garbage bytes"),
                            "pytorch_model.bin is not a readable PyTorch state dict",
                            "Unsupported operand"),
    "index_weight_map_list": (lambda d: _replace_weights(
        d, "model.safetensors.index.json", b'{"weight_map": ["model-1.safetensors"]}'),
                              "weight_map that is not tensor name -> shard file name"),
    "tokenizer_json_tokens": (lambda d: (d / "tokenizer.json").write_text(
        '{"added_tokens": "<mask>"}'), "tokenizer.json has added_tokens that are not a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_HF_FILES))
def test_garbage_hf_files_are_one_line_errors_naming_them(tiny, tmp_path, capsys, case):
  damage, *needles = BAD_HF_FILES[case]
  hf_dir = hf_copy(tiny, tmp_path)
  damage(hf_dir)
  convert_from_hf(capsys, hf_dir, str(hf_dir), *needles)


def test_convert_from_hf_refuses_a_file_as_hf_dir(tiny, tmp_path, capsys):
  code, err = run(capsys, "convert_from_hf", f"--hf_dir={tiny[1] / 'config.json'}",
                  f"--output_dir={tmp_path / 'out'}")
  assert_one_line_error(code, err, "config.json is a file", "pass a local folder", expect_code=1)


@pytest.mark.parametrize("args,code,needles", [
    (["--output_dir=FILE/sub"], 1, ("cannot be created", "notes.txt is a file, not a directory")),
    (["--output_dir=FILE"], 1, ("notes.txt is a file: pass a directory",)),
    (["--output_dir=OUT", "--step=x"], 2, ("argument --step: invalid int value: 'x'",)),
    (["--output_dir=OUT", "--step=3"], 1, ("no step 3", "available steps: [7]")),
])
def test_convert_to_hf_bad_outputs_and_flags(tiny, tmp_path, capsys, args, code, needles):
  (tmp_path / "notes.txt").write_text("mine")
  args = [a.replace("FILE", str(tmp_path / "notes.txt")).replace("OUT", str(tmp_path / "out"))
          for a in args]
  before = snapshot(tmp_path)
  got, err = run(capsys, "convert_to_hf", f"--checkpoint_dir={tiny[0]}", *args)
  assert_one_line_error(got, err, *needles, expect_code=code)
  assert_unchanged(tmp_path, before)
  assert not (tmp_path / "out").exists()


def test_fill_mask_refuses_text_that_is_not_utf8(tiny, capsys):
  # Bytes of another encoding arrive in argv as lone surrogates (PEP 383).
  code, err = run(capsys, "fill_mask", "caf\udce9 <mask>", f"--checkpoint_dir={tiny[0]}")
  assert_one_line_error(code, err, "is not UTF-8 (character 3)", "iconv", expect_code=2)


def _small_text_dir(root: pathlib.Path) -> pathlib.Path:
  text_dir = root / "new"
  text_dir.mkdir()
  (text_dir / "zu.txt").write_bytes(TEXT)
  return text_dir


@pytest.mark.parametrize("args,code,needles", [
    (["--text_dir=TEXT/zu.txt"], 1, ("text directory", "zu.txt is a file")),
    (["--text_dir=TEXT", "--checkpoint_dir=MISSING"], 1, ("no checkpoint in", "missing")),
    (["--text_dir=TEXT", "--seed=-1"], 2, ("ExtensionConfig.seed=-1 is invalid",)),
    (["--text_dir=TEXT", "--init_std=nan"], 2, ("ExtensionConfig.init_std=nan is invalid",)),
    (["--text_dir=TEXT", "--output_dir=TEXT/zu.txt/out"], 1, ("zu.txt is a file, not a",)),
])
def test_extend_vocab_refuses_bad_input_before_training(tiny, tmp_path, capsys, monkeypatch,
                                                        args, code, needles):
  monkeypatch.setenv("POLYGLOT_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(vocab_lib, "train_from_mixture",
                      lambda *a: pytest.fail("trained before the inputs were checked"))
  text_dir = _small_text_dir(tmp_path)
  args = [a.replace("TEXT", str(text_dir)).replace("MISSING", str(tmp_path / "missing"))
          for a in args]
  if not any(a.startswith("--checkpoint_dir") for a in args):
    args.append(f"--checkpoint_dir={tiny[0]}")
  if not any(a.startswith("--output_dir") for a in args):
    args.append(f"--output_dir={tmp_path / 'out'}")
  before = snapshot(tmp_path)
  got, err = run(capsys, "extend_vocab", *args)
  assert_one_line_error(got, err, *needles, expect_code=code)
  assert_unchanged(tmp_path, before)


@pytest.mark.parametrize("args,needles", [
    (["--mesh=data=two", "--batch=8"], ("argument --mesh: item 'data=two' is invalid",)),
    (["--mesh=data=2", "--batch=0"], ("argument --batch: 0 is invalid: use an integer >= 1",)),
    (["--mesh=data=2", "--batch=8", "--layers=0"], ("argument --layers: 0 is invalid",)),
    (["--mesh=data=2", "--batch=8", "--seq=1000"], ("--seq=1000 is invalid", "max_len=128")),
])
def test_plan_memory_bad_flags(capsys, monkeypatch, args, needles):
  # The tool sets these for its fake devices; restored after the test.
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
  code, err = run(capsys, "plan_memory", "--model=tiny", *args)
  assert_one_line_error(code, err, *needles, expect_code=2)


@pytest.mark.parametrize("args,needles", [
    ([], ("the following arguments are required: command",)),
    (["train", "--steps=0"], ("argument --steps: 0 is invalid: use an integer >= 1",)),
    (["train", "--seq-len=-8"], ("argument --seq_len: -8 is invalid",)),
    (["train", "--prediction_rate=abc"], ("argument --prediction_rate: invalid rate 'abc'",)),
    (["scaling", "--lengths", "128", "0"], ("argument --lengths: 0 is invalid",)),
    (["data", "--batches=0"], ("argument --batches: 0 is invalid",)),
])
def test_benchmark_bad_arguments(capsys, args, needles):
  code, err = run(capsys, "benchmark", *args, *(["--no_record"] if args[:1] == ["train"] else []))
  assert_one_line_error(code, err, *needles, expect_code=2)


def test_process_boundary_prints_one_line_and_no_traceback(tiny, tmp_path):
  """Whole processes, run at once: nothing (logging, absl, jax) adds a traceback or a line."""
  hf_dir = hf_copy(tiny, tmp_path)
  _edit_config(hf_dir, hidden_size=None)
  out_dir = tmp_path / "vocab_dir"
  out_dir.mkdir()
  cases = {
      "fill_mask": ([b"-m", b"polyglot.fill_mask", b"caf\xe9 <mask>",
                     f"--checkpoint_dir={tiny[0]}".encode()], 2, "is not UTF-8"),
      "train_vocab": (["tools/train_vocab.py", f"--output={out_dir}"], 1, "is a directory"),
      "convert_from_hf": (["tools/convert_from_hf.py", f"--hf_dir={hf_dir}",
                           f"--output_dir={tmp_path / 'out'}"], 1,
                          "field hidden_size=None is invalid"),
      "benchmark": (["tools/benchmark.py", "train", "--steps=0", "--no_record"], 2,
                    "--steps: 0 is invalid"),
  }
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = {name: subprocess.Popen([sys.executable, *args], cwd=hf_testing.REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for name, (args, _, _) in cases.items()}
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    _, code, needle = cases[name]
    assert_one_line_error(proc.returncode, stderr.decode("utf-8", "replace"), needle,
                          expect_code=code)
  assert not (tmp_path / "out").exists() and not any(out_dir.iterdir())
