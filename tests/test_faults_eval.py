"""Faults in XTREME evaluation: caches that no longer match, damaged checkpoints and data,
settings that do not fit the model. Each is redone with a notice or is one `error:` line,
never a traceback, and a failing run leaves the output directory as it was.

Runs `python -m polyglot.eval.xtreme` in-process (as a subprocess where only that shows
what a user sees) on tests/test_xtreme_run.py's tiny checkpoints and fixture files: Tatoeba
(no fine-tuning) wherever the defect allows, XNLI (four steps) for the fine-tuned model
cache.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

import polyglot
from faults_testing import assert_one_line_error, assert_unchanged, snapshot
from polyglot import checkpoint, models
from polyglot.eval import __main__ as cli
from polyglot.eval import tasks
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME
from test_xtreme_run import (DE, EN, REPO, ZH, smoke_gin, tiny_params, train_spm,
                             write_fixtures)

STEP = 7


# ---- checkpoints, data and runs ----

def config(model_bytes: bytes, **overrides) -> models.EncoderConfig:
  pieces = spm.SentencePieceProcessor(model_proto=model_bytes).get_piece_size()
  return models.preset("tiny", vocab_size=pieces + 2, num_layers=1, dropout_rate=0.0,
                       attention_dropout_rate=0.0).replace(**overrides)


def save_checkpoint(workdir: pathlib.Path, model_bytes: bytes, cfg: models.EncoderConfig,
                    seed: int = 0) -> None:
  """A masked-LM checkpoint at `STEP`; an existing one is replaced (same path and step)."""
  shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
  ck = checkpoint.Checkpointer(str(workdir / "checkpoints"),
                               checkpoint.CheckpointConfig(save_every=1, async_save=False))
  ck.save(STEP, params=tiny_params(cfg, seed), opt_state={"step": np.int32(STEP)},
          vocab=model_bytes, meta={"model_kind": "masked_lm", "model_config": cfg.to_dict()},
          data=None)
  ck.wait()
  ck.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Fixture data, a SentencePiece model, a 1-layer checkpoint (`ckpt`) and a 2-layer one
  with 48 positions (`small`)."""
  root = tmp_path_factory.mktemp("faults_eval")
  model = train_spm((EN + DE + ZH) * 20, 1000)
  (root / "spm.model").write_bytes(model)
  write_fixtures(root / "data")
  save_checkpoint(root / "ckpt", model, config(model))
  save_checkpoint(root / "small", model, config(model, num_layers=2, max_len=48))
  smoke_gin(root / "smoke.gin")
  return root


def argv(env, ckpt, out, *extra, tasks_="tatoeba", data=None, gin="smoke.gin") -> list[str]:
  """`python -m polyglot.eval.xtreme`'s flags."""
  return [f"--checkpoint_dir={ckpt}", f"--data_dir={data or env / 'data'}", f"--tasks={tasks_}",
          f"--output_dir={out}", f"--gin_file={env / gin}", *extra]


def main(*args, **kwargs) -> int:
  return cli.main(["--benchmark=xtreme", *argv(*args, **kwargs)])


def command(*args, **kwargs) -> subprocess.CompletedProcess:
  """The command as a user runs it: all it prints (TensorStore reports some failures from
  its threads through sys.unraisablehook, which pytest intercepts in-process)."""
  return subprocess.run([sys.executable, "-m", "polyglot.eval.xtreme", *argv(*args, **kwargs)],
                        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""),
                        capture_output=True, text=True, timeout=300)


def copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst


def stored(out: pathlib.Path, task: str) -> dict:
  return json.loads((out / "scores" / f"{task}.json").read_text(encoding="utf-8"))


def fine_tuned_key(directory: pathlib.Path) -> dict:
  reader = checkpoint.Checkpointer(str(directory), read_only=True)
  return reader.read_meta(reader.resolve_step())["xtreme"]["settings"]


def warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def logged(caplog, text: str) -> list[str]:
  return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# ---- content-keyed caches ----

def test_stale_eval_results_after_the_checkpoint_changes(env, tmp_path, caplog):
  """The checkpoint at the same path and step is replaced by other weights: the scores are
  computed again (those of the new weights), not reused."""
  ckpt, out = copy(env / "ckpt", tmp_path / "ckpt"), tmp_path / "out"
  assert main(env, ckpt, out) == 0
  before = stored(out, "tatoeba")
  save_checkpoint(ckpt, (env / "spm.model").read_bytes(),
                  config((env / "spm.model").read_bytes()), seed=1)
  caplog.clear()
  assert main(env, ckpt, out) == 0
  path = out / "scores" / "tatoeba.json"
  assert (f"tatoeba: {path} is stale (checkpoint parameters, checkpoint vocabulary changed): "
          "scoring again") in warnings(caplog)
  after = stored(out, "tatoeba")
  assert after["settings"]["params"] == checkpoint.fingerprint(str(ckpt), STEP)
  assert after["settings"]["params"] != before["settings"]["params"]
  assert after["scores"] != before["scores"]
  assert main(env, ckpt, tmp_path / "fresh") == 0
  assert after["scores"] == stored(tmp_path / "fresh", "tatoeba")["scores"]


def test_changed_data_file_is_rescored(env, tmp_path, caplog):
  data, out = copy(env / "data", tmp_path / "data"), tmp_path / "out"
  assert main(env, env / "ckpt", out, data=data) == 0
  english = data / "tatoeba" / "tatoeba.deu-eng.eng"
  english.write_text("\n".join(EN[::-1]) + "\n", encoding="utf-8")  # same names and sizes
  caplog.clear()
  assert main(env, env / "ckpt", out, data=data) == 0
  assert (f"tatoeba: {out / 'scores' / 'tatoeba.json'} is stale (data files changed): "
          "scoring again") in warnings(caplog)
  assert not logged(caplog, "reusing scores")


def test_data_fingerprint_follows_the_bytes_not_the_path(env, tmp_path):
  """Keyed on names (relative to the data root) and bytes: a moved copy keeps its caches, a
  file rewritten in place does not; a TFDS builder is keyed on its dataset_info.json."""
  spec, keys = XTREME.task("tatoeba"), [("de", "test")]
  data = copy(env / "data", tmp_path / "data")
  here = tasks.fingerprint(tasks.discover(spec, data_dir=data), keys)
  assert tasks.fingerprint(tasks.discover(spec, data_dir=env / "data"), keys) == here
  (data / "tatoeba" / "tatoeba.deu-eng.eng").write_text("\n".join(EN[::-1]) + "\n")
  assert tasks.fingerprint(tasks.discover(spec, data_dir=data), keys) != here
  info = tmp_path / "tfds" / "tatoeba" / "tatoeba_de" / "1.0.0" / "dataset_info.json"
  info.parent.mkdir(parents=True)
  info.write_text('{"splits": [{"name": "train", "numBytes": "100"}]}')
  tfds = tasks.discover(spec, tfds_data_dir=tmp_path / "tfds")
  prepared = tasks.fingerprint(tfds, keys)
  assert tasks.fingerprint(tfds, [("fr", "test")]) != prepared
  info.write_text('{"splits": [{"name": "train", "numBytes": "120"}]}')
  assert tasks.fingerprint(tfds, keys) != prepared


@pytest.mark.parametrize("damage", [
    lambda raw: raw[:len(raw) // 2],  # truncated
    lambda raw: b"[]",                # JSON, not a scores file
    lambda raw: b"\xff" + raw,        # not UTF-8
])
def test_corrupt_scores_json_is_rescored(env, tmp_path, caplog, capfd, damage):
  out = tmp_path / "out"
  assert main(env, env / "ckpt", out) == 0
  path = out / "scores" / "tatoeba.json"
  good = json.loads(path.read_text(encoding="utf-8"))
  path.write_bytes(damage(path.read_bytes()))
  capfd.readouterr()
  caplog.clear()
  assert main(env, env / "ckpt", out) == 0
  assert any(w.startswith(f"tatoeba: {path} cannot be read (") and w.endswith(
      "): scoring again") for w in warnings(caplog)), warnings(caplog)
  assert stored(out, "tatoeba")["scores"] == good["scores"]
  assert "Traceback" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def xnli_run(env, tmp_path_factory):
  """A checkpoint and the output of a finished XNLI run on it (copies keep the cache valid:
  the key is the files' names and bytes)."""
  root = tmp_path_factory.mktemp("xnli_run")
  ckpt = copy(env / "ckpt", root / "ckpt")
  assert main(env, ckpt, root / "out", tasks_="xnli") == 0
  return ckpt, root / "out"


@pytest.mark.parametrize("change, extra, what", [
    ("checkpoint", (), "checkpoint parameters, checkpoint vocabulary"),
    ("learning rate", ("--gin.xnli/TaskHparams.learning_rate=5e-4",), "task settings"),
])
def test_stale_finetuned_model_is_moved_aside_and_retrained(env, xnli_run, tmp_path, caplog,
                                                           change, extra, what):
  ckpt, out = copy(xnli_run[0], tmp_path / "ckpt"), copy(xnli_run[1], tmp_path / "out")
  finetuned = out / "finetuned" / "xnli"
  old_key = fine_tuned_key(finetuned)
  if change == "checkpoint":  # other weights at the same path and step
    save_checkpoint(ckpt, (env / "spm.model").read_bytes(),
                    config((env / "spm.model").read_bytes()), seed=1)
  caplog.clear()
  assert main(env, ckpt, out, *extra, tasks_="xnli") == 0
  moved, = (out / "finetuned").glob("xnli.stale-*")
  assert (f"xnli: {finetuned} is stale ({what} changed): moved aside to {moved}; fine-tuning "
          "again") in warnings(caplog)
  assert logged(caplog, "xnli: fine-tuning on")
  assert fine_tuned_key(moved) == old_key  # kept as it was
  new_key = fine_tuned_key(finetuned)
  assert new_key["params"] == checkpoint.fingerprint(str(ckpt), STEP)
  assert stored(out, "xnli")["settings"]["hparams"] == new_key["hparams"]
  assert (new_key["params"] != old_key["params"]) == (change == "checkpoint")
  assert (new_key["hparams"] != old_key["hparams"]) == (change == "learning rate")


def test_damaged_finetuned_model_is_moved_aside_and_retrained(env, xnli_run, tmp_path, caplog,
                                                              capfd):
  out = copy(xnli_run[1], tmp_path / "out")
  (out / "scores" / "xnli.json").unlink()  # else the scores are reused, the model unread
  finetuned = out / "finetuned" / "xnli"
  for f in finetuned.glob("*/params/**/d/*"):
    f.write_bytes(f.read_bytes()[:8])
  before = sorted(p.relative_to(finetuned) for p in finetuned.rglob("*"))
  capfd.readouterr()
  caplog.clear()
  assert main(env, xnli_run[0], out, tasks_="xnli") == 0
  moved, = (out / "finetuned").glob("xnli.damaged-*")
  assert sorted(p.relative_to(moved) for p in moved.rglob("*")) == before  # kept as it was
  notice, = [w for w in warnings(caplog) if w.startswith(f"xnli: {finetuned} cannot be read")]
  assert notice.endswith(f": moved aside to {moved}; fine-tuning again") and len(notice) < 600
  assert logged(caplog, "xnli: fine-tuning on")
  assert polyglot.load(str(finetuned)).meta["task"] == "xnli"
  assert "Traceback" not in capfd.readouterr().err


# ---- one-line errors ----

def _garble_meta(ckpt: pathlib.Path) -> None:
  (ckpt / "checkpoints" / str(STEP) / "meta" / "metadata").write_bytes(b"\x00garbage{")


def _truncate_params(ckpt: pathlib.Path) -> None:
  for f in (ckpt / "checkpoints" / str(STEP) / "params").glob("**/d/*"):
    f.write_bytes(f.read_bytes()[:8])


@pytest.mark.parametrize("damage", [_garble_meta, _truncate_params])
def test_corrupt_checkpoint_given_to_eval_is_one_line_error(env, tmp_path, damage):
  ckpt, out = copy(env / "ckpt", tmp_path / "ckpt"), tmp_path / "out"
  assert main(env, ckpt, out) == 0
  before = snapshot(out)
  damage(ckpt)
  done = command(env, ckpt, out)
  assert_one_line_error(done.returncode, done.stderr, str(ckpt), f"step {STEP}", expect_code=1)
  assert_unchanged(out, before)


def test_latin1_squad_json_is_one_line_error(env, tmp_path, capfd):
  data = copy(env / "data", tmp_path / "data")
  bad = data / "mlqa" / "test-context-de-question-de.json"
  assert "ü" in bad.read_text(encoding="utf-8")
  bad.write_bytes(bad.read_text(encoding="utf-8").encode("latin-1"))
  code = main(env, env / "ckpt", tmp_path / "out", tasks_="mlqa", data=data)
  assert_one_line_error(code, capfd.readouterr().err, f"{bad}:1: not UTF-8", "iconv",
                        expect_code=1)


@pytest.mark.parametrize("text, what", [
    ("42", "the top level is a number, not an object"),
    ('"SQuAD"', "the top level is a string, not an object"),
    ('{"version": "1.1"}', "the top-level object has no data list"),
    ('{"data": [7]}', "article 0 is a number, not an object"),
    ('[["text"]]', "article 0 is a list, not an object"),
])
def test_scalar_squad_json_is_one_line_error(env, tmp_path, capfd, text, what):
  data = copy(env / "data", tmp_path / "data")
  bad = data / "mlqa" / "test-context-de-question-de.json"
  bad.write_text(text, encoding="utf-8")
  code = main(env, env / "ckpt", tmp_path / "out", tasks_="mlqa", data=data)
  assert_one_line_error(code, capfd.readouterr().err, f"{bad}: {what}",
                        'expected SQuAD v1.1: {"data": [', expect_code=1)


def test_latin1_tsv_is_one_line_error_naming_the_line(env, tmp_path, capfd):
  data = copy(env / "data", tmp_path / "data")
  bad = data / "xnli" / "dev-de.tsv"
  lines = bad.read_text(encoding="utf-8").splitlines(keepends=True)
  bad.write_bytes("".join(lines[:2]).encode("utf-8") + "".join(lines[2:]).encode("latin-1"))
  first = next(n for n, line in enumerate(lines, 1) if n > 2 and not line.isascii())
  code = main(env, env / "ckpt", tmp_path / "out", tasks_="xnli", data=data)
  assert_one_line_error(code, capfd.readouterr().err, f"{bad}:{first}: not UTF-8", "iconv",
                        expect_code=1)


# ---- settings that fit the model ----

def _caps(env) -> str:
  """Smoke-run caps that leave every sequence length and the retrieval layer unset."""
  (env / "caps.gin").write_text("\n".join([
      "EvalConfig.max_train_examples = 16", "EvalConfig.max_eval_examples = 8",
      "EvalConfig.predict_batch_size = 8", "xnli/TaskHparams.max_steps = 2",
      "xnli/TaskHparams.batch_size = 8", "tatoeba/RetrievalHparams.batch_size = 8"]) + "\n")
  return "caps.gin"


def test_xtreme_settings_fit_a_small_model(env, tmp_path, caplog):
  """A 2-layer model with 48 positions runs gin/eval/xtreme.gin's settings in one run:
  lengths cut to 48, Tatoeba at hidden state 1 (2/3 of 2 layers), one notice each; a
  value the user sets is kept."""
  out = tmp_path / "out"
  assert main(env, env / "small", out, tasks_="xnli,tatoeba", gin=_caps(env)) == 0
  notices = [w for w in warnings(caplog) if "checkpoint's" in w]
  assert notices == [
      "xnli/TaskHparams.max_seq_length: 128 is longer than the checkpoint's max_len, using 48",
      "tatoeba/RetrievalHparams.max_seq_length: 512 is longer than the checkpoint's max_len, "
      "using 48",
      "tatoeba/RetrievalHparams.layer: using hidden state 1 of the checkpoint's 2-layer "
      "encoder, not 8 (XTREME's layer for its depth, else 2/3 of it)"]
  assert stored(out, "xnli")["settings"]["hparams"]["max_seq_length"] == 48
  hp = stored(out, "tatoeba")["settings"]["hparams"]
  assert (hp["layer"], hp["max_seq_length"]) == (1, 48)
  fitted = (out / "config.gin").read_text().split("# Fitted to the checkpoint")[1]
  assert "xnli/TaskHparams.max_seq_length = 48\n" in fitted
  assert "tatoeba/RetrievalHparams.layer = 1\n" in fitted

  caplog.clear()
  assert main(env, env / "small", out, "--gin.tatoeba/RetrievalHparams.layer=2",
              tasks_="tatoeba", gin="caps.gin") == 0
  assert not logged(caplog, "RetrievalHparams.layer:")
  assert stored(out, "tatoeba")["settings"]["hparams"]["layer"] == 2


def test_only_the_users_gin_bindings_count_as_set(env):
  """gin/eval/xtreme.gin's values are fitted; the user's are kept: scoped, or unscoped where
  gin/eval/xtreme.gin binds no scoped value (a scoped default outranks an unscoped
  binding in gin, so that one never takes effect)."""
  args = cli.parse_flags(["--benchmark=xtreme", *argv(
      env, env / "ckpt", env / "unused", "--gin.RetrievalHparams.layer=1",
      "--gin.TaskHparams.max_seq_length=64", gin=_caps(env))])
  specs = XTREME.parse_tasks("xnli,tatoeba")
  assert cli.user_settings(args, specs) == {
      "xnli": {"max_steps", "batch_size"},
      "tatoeba": {"batch_size", "layer"}}


@pytest.mark.parametrize("extra, tasks_, errors", [
    (("--mesh", "--gin.xnli/TaskHparams.batch_size=4", "--gin.xnli/TaskHparams.max_seq_length=64",
      "--gin.tatoeba/RetrievalHparams.layer=3"), "xnli,tatoeba",
     ["xnli/TaskHparams.max_seq_length=64 exceeds the checkpoint's max_len=48",
      "xnli/TaskHparams.batch_size=4 does not split over the mesh's 8 batch shards",
      "tatoeba/RetrievalHparams.layer=3 is out of range for the checkpoint's 2-layer encoder"]),
    (("--gin.xnli/TaskHparams.learning_rate=0.0", "--gin.tatoeba/RetrievalHparams.batch_size=0",
      "--gin.EvalConfig.max_eval_examples=-1"), "xnli,tatoeba",
     ["xnli/TaskHparams.learning_rate=0.0 is invalid",
      "tatoeba/RetrievalHparams.batch_size=0 is invalid",
      "EvalConfig.max_eval_examples=-1 is invalid"]),
])
def test_setting_errors_are_reported_together(env, tmp_path, capfd, extra, tasks_, errors):
  out = tmp_path / "out"
  code = main(env, env / "small", out, *extra, tasks_=tasks_, gin=_caps(env))
  line = assert_one_line_error(code, capfd.readouterr().err, *errors, expect_code=2)
  assert line.count("; ") == len(errors) - 1
  assert not out.exists()


def test_failing_eval_run_keeps_the_previous_config_gin(env, tmp_path, capfd):
  """Neither a setting that does not fit nor data that fails mid-run touches the files of
  the run before (config.gin, the report, the scores)."""
  data, out = copy(env / "data", tmp_path / "data"), tmp_path / "out"
  assert main(env, env / "ckpt", out, data=data) == 0
  before = snapshot(out)
  assert "config.gin" in before
  code = main(env, env / "ckpt", out, "--gin.tatoeba/RetrievalHparams.layer=5", data=data)
  assert_one_line_error(code, capfd.readouterr().err, "RetrievalHparams.layer=5", expect_code=2)
  assert_unchanged(out, before)
  english = data / "tatoeba" / "tatoeba.deu-eng.eng"
  english.write_text("\n".join(EN[:-1]) + "\n", encoding="utf-8")
  code = main(env, env / "ckpt", out, data=data)
  assert_one_line_error(code, capfd.readouterr().err, "line-aligned", expect_code=1)
  assert_unchanged(out, before)
