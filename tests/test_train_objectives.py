"""Training with MLM + TLM + XLCo: TLM rows on real verse pairs, exact resume with the
momentum encoder and the queue, and a checkpoint that loads like an MLM one; MRTD starting
from it, resumed exactly with the generator.

Runs are in-process `train.train` calls on a 6-language slice of the embedded corpus
(MLM) and 3 languages of the shared bible (TLM, XLCo); they skip without ../shared/data.
"""
import dataclasses
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

import polyglot
import tasks
from polyglot import checkpoint, objectives, optimizer, train
from polyglot.data import bitext, pipeline
from polyglot.data.vocab import default_vocabulary

BIBLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "parallel" / "bible"
BIBLE_LANGS = ["swh_Latn", "est_Latn", "wol_Latn"]
MLM_LANGS = ["eng_Latn", "fra_Latn", "swh_Latn", "rus_Cyrl", "arb_Arab", "cmn_Hans"]

pytestmark = pytest.mark.skipif(not BIBLE.is_dir(), reason=f"{BIBLE} is absent")


@pytest.fixture(scope="module")
def bible():
  return tasks.register_bible(BIBLE, name="bible_three", languages=BIBLE_LANGS).name


def test_tlm_rows_pair_a_verse_with_its_translation(bible):
  """Each packed segment is `<s> x </s></s> y </s>` with positions restarting at the second
  part, x and y a verse and its translation (their starts when cut), masks on both sides."""
  vocab = default_vocabulary()
  texts = {lang: bitext.read_id_tsv(BIBLE / f"{lang}.tsv") for lang in BIBLE_LANGS}
  # What the pieces of each verse decode to: the reference a cut side must start.
  norm = {lang: {vid: vocab.decode(vocab.encode(t)) for vid, t in verses.items()}
          for lang, verses in texts.items()}
  it = pipeline.make_iterator(bible, length=96, batch_size=4, features="tlm", seed=1)
  masked_sides = set()
  checked = 0
  for _ in range(2):
    b = next(it)
    for row in range(4):
      for seg in range(1, b["segment_ids"][row].max() + 1):
        at = np.flatnonzero(b["segment_ids"][row] == seg)
        targets, positions = b["targets"][row][at], b["positions"][row][at]
        restart = np.flatnonzero(positions == 0)
        assert list(restart[:1]) == [0] and len(restart) == 2, positions
        j = restart[1]
        assert targets[0] == vocab.bos_id and targets[j - 1] == targets[j] == vocab.eos_id
        assert targets[-1] == vocab.eos_id and list(positions[j:]) == list(range(len(at) - j))
        x, y = vocab.decode(list(targets[1:j - 1])), vocab.decode(list(targets[j + 1:-1]))
        found = [(la, lb) for la in BIBLE_LANGS for lb in BIBLE_LANGS if la != lb
                 for vid, t in norm[la].items()
                 if t.startswith(x) and vid in norm[lb] and norm[lb][vid].startswith(y)]
        assert found, (x, y)
        weights = b["loss_weights"][row][at]
        assert not weights[[0, j - 1, j, len(at) - 1]].any()  # specials are never masked
        masked_sides |= {"x" for w in weights[:j] if w} | {"y" for w in weights[j:] if w}
        checked += 1
  assert checked >= 8 and masked_sides == {"x", "y"}


def run_config(bible, num_steps, save_every):
  return train.RunConfig(
      train=train.TrainConfig(num_steps=num_steps, batch_size=8, seq_len=32, log_every=1,
                              eval_every=2, eval_batches=1, shuffle_buffer=32,
                              mixture=tasks.register_embedded("embedded_six_objectives",
                                                              languages=MLM_LANGS).name),
      optim=optimizer.OptimConfig(learning_rate=1e-3, warmup_steps=1),
      checkpoint=checkpoint.CheckpointConfig(save_every=save_every),
      objectives=(objectives.MLM(), objectives.TLM(mixture=bible, seq_len=48),
                  objectives.XLCo(mixture=bible, seq_len=24, queue_size=16, momentum=0.9)))


def saved_state(workdir, step):
  """(params, opt_state item) of checkpoint `step`, restored onto this run's shapes."""
  job = train.build(run_config("bible_three", 4, 2), "")
  reader = checkpoint.Checkpointer(str(pathlib.Path(workdir, "checkpoints")), read_only=True)
  restored = reader.restore(job.setup.abstract.params, train.opt_item(job.setup.abstract),
                            step=step)
  return jax.device_get((restored.params, restored.opt_state)), restored.data


@pytest.fixture(scope="module")
def full_run(bible, tmp_path_factory):
  """The 4 steps of MLM + TLM + XLCo, checkpoints at 2 and 4."""
  workdir = tmp_path_factory.mktemp("objectives") / "full"
  train.train(run_config(bible, 4, 2), str(workdir))
  return workdir


def test_resume_is_bit_identical_with_the_momentum_encoder_and_queue(bible, full_run, tmp_path):
  full, resumed = full_run, tmp_path / "resumed"
  shutil.copytree(full / "checkpoints" / "2", resumed / "checkpoints" / "2")
  train.train(run_config(bible, 4, 2), str(resumed))
  (want, want_opt), data = saved_state(full, 4)
  (got, got_opt), _ = saved_state(resumed, 4)
  assert set(want_opt["objectives"]["xlco"]) == {"momentum", "queue", "filled", "next"}
  assert int(want_opt["objectives"]["xlco"]["filled"]) == 16  # 4 steps x 8 pairs, capped
  for a, b in zip(jax.tree.leaves((want, want_opt)), jax.tree.leaves((got, got_opt)),
                  strict=True):
    assert np.array_equal(a, b)
  assert sorted(data["states"]) == ["mlm", "tlm", "xlco"]

  loaded = polyglot.load(str(full))  # loads, evaluates and exports as any MLM checkpoint
  assert loaded.meta["model_kind"] == "masked_lm"
  assert [o["name"] for o in loaded.meta["objectives"]] == ["mlm", "tlm", "xlco"]
  assert loaded.meta["objectives"][2]["queue_size"] == 16


def rtd_config(bible, init_from):
  run = run_config(bible, 4, 2)
  return dataclasses.replace(
      run, train=dataclasses.replace(run.train, init_from=init_from),
      objectives=(objectives.MRTD(),))


def test_rtd_starts_from_an_mlm_checkpoint_and_resumes_bit_identically(bible, full_run,
                                                                       tmp_path):
  """MRTD from the MLM run's checkpoint: the discriminator starts as that encoder and MLM
  head, the generator fresh; resumed from step 2 it ends bit-identical, generator too (TRTD,
  the same objective on "tlm" rows, trains in test_commands' recipe run)."""
  config = rtd_config(bible, str(full_run))
  job = train.build(config, "")
  start = jax.device_get(train.fresh_state(job.setup, job.cfg, config, job.mesh, job.vocab,
                                           job.objectives).params)
  (mlm_params, _), _ = saved_state(full_run, 4)
  for a, b in zip(jax.tree.leaves({k: start[k] for k in ("encoder", "lm_head")}),
                  jax.tree.leaves(mlm_params), strict=True):
    assert np.array_equal(a, b)
  assert {"generator", "rtd_head"} <= set(start)

  full, resumed = tmp_path / "rtd", tmp_path / "rtd_resumed"
  train.train(config, str(full))
  shutil.copytree(full / "checkpoints" / "2", resumed / "checkpoints" / "2")
  train.train(config, str(resumed))
  reader = lambda w: checkpoint.Checkpointer(str(w / "checkpoints"), read_only=True)  # noqa: E731
  want, got = (jax.device_get(reader(w).restore(job.setup.abstract.params,
                                                train.opt_item(job.setup.abstract), step=4))
               for w in (full, resumed))
  for a, b in zip(jax.tree.leaves((want.params, want.opt_state)),
                  jax.tree.leaves((got.params, got.opt_state)), strict=True):
    assert np.array_equal(a, b)
  assert sorted(want.data["states"]) == ["mrtd"]

  loaded = polyglot.load(str(full))
  assert type(loaded.model).__name__ == "ReplacedTokenDetector"
  assert loaded.meta["generator_config"]["hidden_size"] == job.cfg.hidden_size // 4
  assert [o["name"] for o in loaded.meta["objectives"]] == ["mrtd"]
  rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
  held_out = [r for r in rows if r["split"] == "eval"][-1]
  assert {"mrtd_detection_loss", "mrtd_generator_accuracy", "mrtd_replaced"} <= set(held_out)
