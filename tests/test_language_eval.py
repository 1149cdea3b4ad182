"""Evaluation during pretraining. Per language on held-out text: the rows
(polyglot.data.heldout), the per-language sums (objectives.mlm.language_sums), the table
(polyglot.eval.languages) and the commands that write and redraw it. Bitext retrieval
(`RunConfig.bitext`): what the run reports equals what `python -m polyglot.eval
--benchmark=bitext` gives on its checkpoint."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from polyglot import models, objectives, sharding
from polyglot.data import heldout, ids, masking, streams
from polyglot.errors import ConfigError
from polyglot.eval import languages
from polyglot.objectives import mlm

ROOT = pathlib.Path(__file__).resolve().parents[1]
CFG = models.preset("tiny", dropout_rate=0.0, attention_dropout_rate=0.0)
MASK_ID = CFG.vocab_size - 1
WORD_START = np.ones(CFG.vocab_size, bool)


def corpus(sizes, seed=0) -> streams.Corpus:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(ids.FIRST_PIECE_ID, MASK_ID, sum(sizes)).astype(np.int32)
  return streams.Corpus(tokens, np.asarray([0, *np.cumsum(sizes)], np.int64),
                        tuple(f"l{j}" for j in range(len(sizes))))


def rows_of(c, length, n, rate=0.15, seed=3):
  return heldout.language_rows(c, length=length, rows_per_language=n, seed=seed,
                               mlm=masking.MlmConfig(mask_rate=rate), mask_id=MASK_ID,
                               word_start=WORD_START)


def test_rows_hold_each_language_in_chunks_and_repeat_short_text_under_other_masks():
  c = corpus([10, 0, 25])
  rows = rows_of(c, length=12, n=3, rate=0.5)
  assert rows["languages"].tolist() == [0, 0, 0, 2, 2, 2]
  a, z = c.tokens[:10], c.tokens[10:]
  want = [[0, *a, 2]] * 3 + [[0, *z[:10], 2], [0, *z[10:20], 2], [0, *z[20:], 2] + [1] * 5]
  assert rows["targets"].tolist() == want
  assert rows["segment_ids"][5].tolist() == [1] * 7 + [0] * 5
  assert (rows["segment_ids"][:5] == 1).all()
  # The short language's copies carry different masks; specials are never predicted.
  assert len({r.tobytes() for r in rows["input_ids"][:3]}) == 3
  special = rows["targets"] < ids.FIRST_PIECE_ID
  assert not rows["loss_weights"][special].any() and rows["loss_weights"].any()
  changed = rows["input_ids"] != rows["targets"]
  assert not (changed & (rows["loss_weights"] == 0)).any()
  # The same rows every time: each evaluation scores the same tokens under the same masks.
  again = rows_of(c, length=12, n=3, rate=0.5)
  assert all(np.array_equal(rows[k], again[k]) for k in heldout.FIELDS)
  empty = rows_of(corpus([0, 0]), length=12, n=3)
  assert all(len(v) == 0 for v in empty.values())


def test_batches_pad_with_rows_that_hold_no_token():
  rows = rows_of(corpus([30, 7]), length=12, n=3)
  assert heldout.num_batches(rows, 4) == 2
  batches = heldout.batches(rows, 4, 3)
  assert [b["targets"].shape for b in batches] == [(4, 12)] * 3
  tail = np.concatenate([b["targets"] for b in batches])[6:]
  assert (tail == ids.PAD_ID).all()
  for k in ("loss_weights", "segment_ids", "languages"):
    assert not np.concatenate([b[k] for b in batches])[6:].any(), k
  assert (batches[2]["positions"] == np.arange(12)).all()
  with pytest.raises(ValueError, match="do not fit"):
    heldout.batches(rows, 4, 1)


def mixture_of(c, rates, count, batch_size=64, length=12, seed=5):
  return heldout.mixture_batches(c, np.asarray(rates, np.float64), length=length,
                                 batch_size=batch_size, count=count, seed=seed,
                                 mlm=masking.MlmConfig(mask_rate=0.5), mask_id=MASK_ID,
                                 word_start=WORD_START)


def test_mixture_batches_draw_languages_at_the_rates_and_take_their_chunks_in_turn():
  """Language 1 has no held-out token and language 3 no rate: neither is drawn; the others
  come at their renormalized rates (0.2 and 0.8 of 4,096 rows), each row the language's
  next chunk, cycling, between <s> and </s>, never wrapping into its own text."""
  c = corpus([25, 0, 1000, 40])
  batches = mixture_of(c, [0.1, 0.5, 0.4, 0.0], count=64)
  assert len(batches) == 64 and all(b["targets"].shape == (64, 12) for b in batches)
  streams_ = {j: c.tokens[c.offsets[j]:c.offsets[j + 1]].tolist() for j in range(4)}
  chunks = {j: [s[i:i + 10] for i in range(0, len(s), 10)] for j, s in streams_.items()}
  owner = {tuple(ch): (j, k) for j in (0, 2, 3) for k, ch in enumerate(chunks[j])}
  taken = {0: 0, 2: 0}
  for b in batches:
    for targets, segments, positions in zip(b["targets"].tolist(), b["segment_ids"].tolist(),
                                            b["positions"].tolist()):
      n = sum(segments)
      assert segments == [1] * n + [0] * (12 - n)
      assert positions == list(range(n)) + [0] * (12 - n)
      assert targets[0] == ids.BOS_ID and targets[n - 1] == ids.EOS_ID
      assert targets[n:] == [ids.PAD_ID] * (12 - n)
      j, k = owner[tuple(targets[1:n - 1])]
      assert k == taken[j] % len(chunks[j]), (j, k)
      taken[j] += 1
  assert taken[0] / 4096 == pytest.approx(0.2, abs=0.02)
  # Masks as training rows': specials never predicted, only predicted pieces changed.
  rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  special = rows["targets"] < ids.FIRST_PIECE_ID
  assert not rows["loss_weights"][special].any()
  assert rows["loss_weights"][~special].mean() == pytest.approx(0.5, abs=0.02)
  assert not ((rows["input_ids"] != rows["targets"]) & (rows["loss_weights"] == 0)).any()
  # The seed fixes languages, chunks and masks; another seed draws others.
  again, other = mixture_of(c, [0.1, 0.5, 0.4, 0.0], count=2), mixture_of(
      c, [0.1, 0.5, 0.4, 0.0], count=2, seed=6)
  assert all(np.array_equal(batches[i][k], again[i][k]) for i in (0, 1) for k in again[i])
  assert not np.array_equal(batches[0]["input_ids"], other[0]["input_ids"])
  assert mixture_of(corpus([0, 0]), [0.5, 0.5], count=2) == []


def _model():
  graphdef, state = nnx.split(models.MaskedLM(CFG, rngs=nnx.Rngs(0)))
  return graphdef, nnx.to_pure_dict(state)


def _sums(graphdef, params, batches, num_languages, loss_cfg, mesh=None):
  fn = jax.jit(lambda p, b: mlm.language_sums(p, b, graphdef=graphdef, loss_cfg=loss_cfg,
                                              num_languages=num_languages))
  total = None
  for b in batches:
    if mesh is not None:
      b = {k: jax.device_put(v, jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(("data",), *[None] * (v.ndim - 1))))
           for k, v in b.items()}
    s = jax.device_get(fn(params, b))
    total = s if total is None else {k: total[k] + s[k] for k in s}
  return total


@pytest.mark.parametrize("prediction_rate", [0.5, None])
def test_language_sums_equal_each_language_evaluated_alone(prediction_rate):
  """The summed per-language metrics of mixed batches against the objective's own held-out
  metrics (`mlm.eval_metrics`) of each language's rows as one batch; and 8 devices
  (data parallel) against one."""
  graphdef, params = _model()
  loss_cfg = objectives.LossConfig(prediction_rate=prediction_rate)
  c = corpus([40, 9, 100, 23], seed=1)
  rows = rows_of(c, length=16, n=4, rate=0.3)
  sums = _sums(graphdef, params, heldout.batches(rows, 8, 2), 4, loss_cfg)
  for j in range(4):
    alone = {k: v[rows["languages"] == j] for k, v in rows.items() if k != "languages"}
    ref = jax.device_get(mlm.eval_metrics(params, alone, graphdef=graphdef, loss_cfg=loss_cfg))
    assert sums["tokens"][j] == alone["loss_weights"].sum() > 0
    np.testing.assert_allclose(sums["loss"][j] / sums["tokens"][j], ref["mlm_loss"], rtol=2e-6)
    np.testing.assert_allclose(sums["correct"][j] / sums["tokens"][j], ref["mlm_accuracy"],
                               rtol=1e-6)
  mesh = sharding.make_mesh(sharding.MeshConfig(data=8))
  sharded = _sums(graphdef, params, heldout.batches(rows, 8, 2), 4, loss_cfg, mesh)
  for k in sums:
    np.testing.assert_allclose(sharded[k], sums[k], rtol=1e-5)


def test_table_groups_languages_by_size_and_script():
  cfg = languages.LanguageEvalConfig(head_min_size=1000, tail_max_size=100)
  names = ["eng_Latn", "rus_Cyrl", "srp_Cyrl", "swh_Latn", "cmn_Hans"]
  sizes = [5000, 500, 50, 99.9, 100]
  sums = {"loss": np.array([2.0, 9.0, 12.0, 8.0, 0.0]),
          "correct": np.array([1.0, 1.0, 0.0, 3.0, 0.0]),
          "tokens": np.array([4.0, 3.0, 4.0, 4.0, 0.0])}
  tab = languages.table(names, sizes, sums, cfg)
  assert list(tab["languages"]) == names[:4]  # no predicted token: left out
  assert tab["languages"]["rus_Cyrl"] == {"size": 500.0, "script": "Cyrl", "group": "torso",
                                          "loss": 3.0, "accuracy": 1 / 3, "tokens": 3}
  assert {n: e["group"] for n, e in tab["languages"].items()} == {
      "eng_Latn": "head", "rus_Cyrl": "torso", "srp_Cyrl": "tail", "swh_Latn": "tail"}
  # Means over languages, each counted once (not over tokens).
  assert tab["groups"]["tail"] == {"loss": 2.5, "accuracy": 0.375, "languages": 2}
  assert list(tab["groups"]) == ["head", "torso", "tail"]
  assert tab["scripts"]["Cyrl"] == {"loss": 3.0, "accuracy": 1 / 6, "languages": 2}
  assert tab["scripts"]["Latn"]["loss"] == pytest.approx(1.25)
  rows = languages.scalars(tab)
  assert rows["eng_Latn/loss"] == 0.5 and rows["group/tail/accuracy"] == 0.375
  assert rows["script/Cyrl/loss"] == 3.0 and "cmn_Hans/loss" not in rows
  assert languages.script_of("not a language") == "?"


@pytest.mark.parametrize("kwargs, needle", [
    ({"rows_per_language": -1}, "rows_per_language=-1 is invalid"),
    ({"head_min_size": 10, "tail_max_size": 20}, "tail_max_size=20 is invalid")])
def test_bad_settings_are_config_errors(kwargs, needle):
  with pytest.raises(ConfigError, match=needle):
    languages.LanguageEvalConfig(**kwargs)


SIX = ("--gin.TrainConfig.mixture=@embedded_mixture()",
       "--gin.embedded_mixture.languages=['eng_Latn', 'deu_Latn', 'rus_Cyrl', 'arb_Arab', "
       "'hin_Deva', 'swh_Latn']")


def run(*args, cwd):
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                        timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


BITEXT = ("--gin.RunConfig.bitext=@BitextConfig()",
          "--gin.BitextConfig.files=['bitext/sw.txt', 'bitext/ru.txt']",
          "--gin.BitextConfig.languages=['swh_Latn', 'rus_Cyrl']")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  """(the folder it ran in, its output): the demo run (6 languages) in workdir/demo with
  per-language evaluation and bitext retrieval on two line-aligned files (relative
  paths) at steps 2 and 4."""
  from polyglot.data import sources  # pylint: disable=g-import-not-at-top
  cwd = tmp_path_factory.mktemp("demo")
  (cwd / "bitext").mkdir()
  texts = sources.embedded_corpus().texts
  for name, lang in (("sw", "swh_Latn"), ("ru", "rus_Cyrl")):  # 20 lines of 8 words
    words = " ".join(texts[lang]).split()
    lines = [" ".join(words[i:i + 8]) for i in range(0, 160, 8)]
    (cwd / "bitext" / f"{name}.txt").write_text("\n".join(lines) + "\n", "utf-8")
  done = run("-m", "polyglot.train", "--workdir=workdir/demo", "--gin.NUM_STEPS=4",
             "--gin.TrainConfig.eval_every=2", "--gin.TrainConfig.log_every=2",
             "--gin.LanguageEvalConfig.rows_per_language=3", *SIX, *BITEXT, cwd=cwd)
  assert done.returncode == 0, done.stderr[-3000:]
  return cwd, done


def test_training_writes_prints_and_plots_the_languages_and_the_command_redraws(demo):
  """Per-language evaluation at steps 2 and 4 in workdir/demo, then README's `python -m
  polyglot.eval.languages workdir/demo` as written, and the command on a workdir without a
  table."""
  tmp_path, done = demo
  wd = tmp_path / "workdir" / "demo"
  tab = json.loads((wd / languages.TABLE_FILE).read_text())
  assert tab["step"] == 4 and len(tab["languages"]) >= 4, tab
  assert {e["script"] for e in tab["languages"].values()} >= {"Latn", "Cyrl"}
  assert all(e["tokens"] > 0 and 0 <= e["accuracy"] <= 1 for e in tab["languages"].values())
  assert tab["thresholds"] == {"head_min_size": 2250, "tail_max_size": 1250}  # demo.gin's
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  by_lang = [r for r in rows if r["split"] == "eval_languages"]
  assert [r["step"] for r in by_lang] == [2, 4] and all(r["seconds"] > 0 for r in by_lang)
  name = next(iter(tab["languages"]))
  assert by_lang[-1][f"{name}/loss"] == pytest.approx(tab["languages"][name]["loss"])
  assert f"held-out MLM by language ({len(tab['languages'])} languages)" in done.stdout
  assert f"plot: {wd / languages.PLOT_FILE}" in done.stdout
  assert (wd / languages.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  (wd / languages.PLOT_FILE).unlink()
  again = run("-m", "polyglot.eval.languages", "workdir/demo", cwd=tmp_path)
  assert again.returncode == 0, again.stderr
  assert again.stdout.splitlines()[0] == f"held-out MLM by language ({len(tab['languages'])} " \
                                        "languages)"
  assert again.stdout.splitlines()[-1] == "plot: " + str(wd / languages.PLOT_FILE)
  assert (wd / languages.PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
  other = run("-m", "polyglot.eval.languages", "workdir/demo", "--output=other.png",
              cwd=tmp_path)
  assert other.returncode == 0 and (tmp_path / "other.png").read_bytes()[:4] == b"\x89PNG"
  missing = run("-m", "polyglot.eval.languages", "nowhere", cwd=tmp_path)
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
  assert "languages.json does not exist" in missing.stderr


def test_training_reports_bitext_retrieval_as_the_command_scores_its_checkpoint(demo):
  """The run's bitext report at step 4 (8 devices, the training mesh) equals `python -m
  polyglot.eval --benchmark=bitext` on the step-4 checkpoint (one device), run as a user
  types it; metrics.jsonl has a row per evaluation and the console a line."""
  tmp_path, done = demo
  wd = tmp_path / "workdir" / "demo"
  report = json.loads((wd / "bitext.json").read_text("utf-8"))
  assert report["settings"]["step"] == 4 and report["settings"]["layer"] == 1
  pair, = report["pairs"]
  assert (pair["a"], pair["b"], pair["sentences"]) == ("swh_Latn", "rus_Cyrl", 20)
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  by_step = {r["step"]: r for r in rows if r["split"] == "eval_bitext"}
  assert sorted(by_step) == [2, 4] and all(r["seconds"] > 0 for r in by_step.values())
  assert by_step[4]["swh_Latn-rus_Cyrl/mining_f1"] == pytest.approx(pair["mining_f1"])
  assert by_step[4]["average/mean"] == pytest.approx(report["average"]["mean"])
  assert f"step 4 bitext: accuracy@1 {pair['mean']:.1f}%" in done.stdout
  cmd = run("-m", "polyglot.eval", "--benchmark=bitext", "--checkpoint_dir=workdir/demo",
            "--files=bitext/sw.txt,bitext/ru.txt", "--languages=swh_Latn,rus_Cyrl",
            "--output_dir=bitext/demo", cwd=tmp_path)
  assert cmd.returncode == 0, cmd.stderr[-3000:]
  offline = json.loads((tmp_path / "bitext" / "demo" / "results.json").read_text("utf-8"))
  assert offline["settings"]["step"] == 4
  for key in ("a_to_b", "b_to_a", "mean", "mining_f1"):
    assert offline["pairs"][0][key] == pytest.approx(pair[key], abs=1e-9), key
  assert "swh_Latn-rus_Cyrl" in (tmp_path / "bitext" / "demo" / "results.md").read_text()
