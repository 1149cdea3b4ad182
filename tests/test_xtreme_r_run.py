"""XTREME-R on the evaluation core: multiple choice (features, model), then
`python -m polyglot.eval --benchmark=xtreme_r` end to end on XTREME-layout fixtures."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from polyglot import models
from polyglot.errors import DataError
from polyglot.eval import features as F
from polyglot.eval import finetune
from polyglot.eval.readers import ChoiceExample
from polyglot.eval.xtreme_r import readers
from polyglot.eval.xtreme_r.tasks import BENCHMARK as XTREME_R
from polyglot.eval import tasks
from test_xtreme_run import DE, EN, REPO, save_tiny_checkpoint, tiny_config, train_spm, write_fixtures
from test_xtreme_r_readers import _ENTITIES, _HELSINKI, _KYIV, _entity, _jsonl, _lareqa_files


class _Tok:
  """Pieces are characters: ids 10 + ord(c) % 50; XLM-R's special ids."""
  bos_id, eos_id, pad_id = 0, 2, 1

  def encode_pieces(self, text):
    return [10 + ord(c) % 50 for c in text]


def test_choice_features_and_batch():
  ex = [ChoiceExample("a", "ab", ("c", "dd"), 1), ChoiceExample("b", "x", ("y", "z"), 0)]
  feats = F.choice_features(ex, _Tok(), 16)
  assert feats[0].input_ids == ((0, 57, 58, 2, 2, 59, 2), (0, 57, 58, 2, 2, 10, 10, 2))
  batch = F.choice_batch(feats, 10, 1)
  assert batch["input_ids"].shape == (2, 2, 10) and batch["labels"].tolist() == [1, 0]
  assert batch["input_mask"][0, 1].tolist() == [1] * 8 + [0] * 2
  with pytest.raises(DataError, match="b: 3 choices, but a has 2"):
    F.choice_features([ex[0], ChoiceExample("b", "x", ("y", "z", "w"), 0)], _Tok(), 16)
  with pytest.raises(DataError, match="label None is not a choice index"):
    F.choice_features([ChoiceExample("a", "x", ("y", "z"), None)], _Tok(), 16)


def test_multiple_choice_scores_each_pair_with_the_sequence_head():
  """The logits [b, c] are a one-label sequence classifier's, row by row (same parameters)."""
  cfg = tiny_config(60, dropout=0.0)
  mc = models.build("multiple_choice", cfg, rngs=nnx.Rngs(0))
  one = models.build("sequence_classification", cfg, rngs=nnx.Rngs(1), num_labels=1)
  nnx.update(one, nnx.state(mc))
  ids = np.array(jax.random.randint(jax.random.key(0), (3, 2, 12), 3, 60), np.int32)
  ids[:, :, -3:] = cfg.pad_id
  logits, _ = mc(ids)
  rows, _ = one(ids.reshape(6, 12))
  assert logits.shape == (3, 2)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(rows).reshape(3, 2))


def _xcopa(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _copa(premises, choices, n):
  return [{"premise": premises[i % len(premises)], "choice1": choices[i % len(choices)],
           "choice2": choices[(i + 3) % len(choices)], "question": ("cause", "effect")[i % 2],
           "label": i % 2, "idx": i} for i in range(n)]


@pytest.fixture(scope="module")
def xtreme_r_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("xtreme_r")
  write_fixtures(root / "data")  # XTREME's layout: XNLI, PAN-X, MLQA, Tatoeba, BUCC
  _xcopa(root / "data/xcopa/train-en.jsonl", _copa(EN, EN[::-1], 12))
  _xcopa(root / "data/xcopa/val-en.jsonl", _copa(EN[::-1], EN, 4))
  _xcopa(root / "data/xcopa/test-de.jsonl", _copa(DE, DE[::-1], 6))
  # Social IQa (socialIQa_v1.4_trn.jsonl): XTREME-R's first stage before COPA.
  _xcopa(root / "data/siqa/socialIQa_v1.4_trn.jsonl",
         [{"context": EN[i % len(EN)], "question": "What happens next?",
           "answerA": EN[(i + 1) % len(EN)], "answerB": EN[(i + 2) % len(EN)],
           "answerC": EN[(i + 3) % len(EN)], "correct": "ABC"[i % 3]} for i in range(9)])
  _lareqa_files(root / "data" / "lareqa")  # xquad-r/{en,de}.json: 3 questions, 5 sentences
  # Mewsli-X in XTREME's per-language layout. Q0 is an oracle: its description is the English
  # mention's query text, so that mention's entity ranks first whatever the encoder.
  mewslix = root / "data" / "mewslix"
  _jsonl(mewslix / "wikinews_mentions" / "dev-en.jsonl", [_HELSINKI])
  _jsonl(mewslix / "wikinews_mentions" / "dev-uk.jsonl", [_KYIV])
  helsinki = readers.read_mewslix_queries(mewslix / "wikinews_mentions" / "dev-en.jsonl")[0]
  oracle = _entity("Q0", helsinki.text, [(0, len(helsinki.text))])
  _jsonl(mewslix / "candidate_set_entities.jsonl", [*_ENTITIES, oracle])
  _jsonl(mewslix / "wikinews_mentions" / "dev-en.jsonl",
         [{**_HELSINKI, "mentions": [{**_HELSINKI["mentions"][0], "entity_id": "Q0"}]}])
  save_tiny_checkpoint(root / "ckpt", train_spm((EN + DE) * 20, 300))
  gin = root / "smoke.gin"
  gin.write_text("".join(f"{t}/TaskHparams.{k} = {v}\n" for t in ("xnli", "xcopa") for k, v in (
      ("max_steps", 3), ("max_seq_length", 64), ("batch_size", 4), ("learning_rate", 1e-3)))
      + "".join(f"{t}/RetrievalHparams.layer = 1\n" for t in ("tatoeba", "lareqa", "mewslix")),
      encoding="utf-8")
  out = root / "out"
  cmd = [sys.executable, "-m", "polyglot.eval", "--benchmark=xtreme_r",
         f"--checkpoint_dir={root / 'ckpt'}", f"--data_dir={root / 'data'}",
         "--tasks=xnli,xcopa,tatoeba,lareqa,mewslix", f"--output_dir={out}", f"--gin_file={gin}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  return proc, out


def test_xtreme_r_runs_xcopa_and_averages_over_tasks(xtreme_r_run):
  proc, out = xtreme_r_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((out / "results.json").read_text(encoding="utf-8"))
  assert list(report["tasks"]) == ["xnli", "xcopa", "tatoeba", "lareqa", "mewslix"]
  xcopa = report["tasks"]["xcopa"]
  assert set(xcopa["languages"]) == {"en", "de"} and xcopa["category"] == "Classification"
  assert xcopa["languages"]["de"]["split"] == "test" and xcopa["languages"]["en"]["split"] == "dev"
  for m in xcopa["languages"].values():  # 6 German and 4 English examples
    assert m["score"] == m["accuracy"] and round(m["accuracy"] * 12) % 100 == 0
  averages = [t["average"] for t in report["tasks"].values()]
  assert report["overall"] == pytest.approx(sum(averages) / 5)  # over tasks, not categories
  # One pool per task, every language's queries against it: LAReQA's 3 questions rank 5
  # sentences (all within the top 20), so each AP is positive.
  lareqa, mewslix = report["tasks"]["lareqa"], report["tasks"]["mewslix"]
  assert set(lareqa["languages"]) == {"en", "de"} and lareqa["category"] == "Retrieval"
  assert all(0 < m["score"] == m["map@20"] <= 100 for m in lareqa["languages"].values())
  # Mewsli-X: one gold entity per mention, so AP is 1 / its rank among the 4 entities; the
  # oracle ranks first (a frozen encoder gives identical texts identical embeddings).
  assert mewslix["languages"]["en"]["map@20"] == pytest.approx(100.0)
  uk = mewslix["languages"]["uk"]["map@20"]
  assert any(uk == pytest.approx(100 / rank) for rank in (1, 2, 3, 4)), uk
  assert mewslix["languages"]["uk"]["split"] == "dev"
  assert report["categories"]["Retrieval"] == pytest.approx(
      (report["tasks"]["tatoeba"]["average"] + lareqa["average"] + mewslix["average"]) / 3)
  assert report["categories"]["Classification"] == pytest.approx(
      (report["tasks"]["xnli"]["average"] + xcopa["average"]) / 2)
  md = (out / "results.md").read_text(encoding="utf-8")
  assert md.startswith("# XTREME-R results") and "mAP@20 with the frozen encoder" in md
  # Two stages: SIQA (3 steps of the smoke settings), then COPA from that model.
  stored = json.loads((out / "scores" / "xcopa.json").read_text(encoding="utf-8"))
  assert stored["model"]["intermediate_steps"] == 3 and stored["model"]["num_steps"] == 3
  assert "xcopa: fine-tuned on the intermediate task (3 steps)" in proc.stderr
  import polyglot  # pylint: disable=g-import-not-at-top
  model = polyglot.load(str(out / "finetuned" / "xcopa"))
  assert type(model.model).__name__ == "MultipleChoice"
  logits, _ = model.model(np.array([[[0, 5, 6, 2], [0, 7, 8, 2]]], np.int32))
  assert logits.shape == (1, 2)


def test_blanked_xcopa_test_labels_are_one_error_line(tmp_path):
  path = tmp_path / "test-it.jsonl"
  _xcopa(path, [{**r, "label": 0} for r in _copa(DE, DE[::-1], 20)])
  with pytest.raises(DataError, match="every label is 0, as in XTREME's download"):
    readers.read_xcopa(path)


def test_xtreme_r_languages_extend_xtremes():
  assert XTREME_R.task("panx").languages[-8:] == ("qu", "pl", "uk", "az", "lt", "pa", "gu", "ro")
  assert XTREME_R.task("xcopa").languages == readers.XCOPA_LANGUAGES
  assert XTREME_R.average == "tasks" and finetune.MODEL_KINDS["multiple_choice"] == (
      "multiple_choice")


def test_mewslix_files_of_every_language_share_the_entity_pool(tmp_path):
  """get-mewsli-x.sh's layout: one mentions file per split for all languages, read per
  language, and the entity pool beside it (read once: the same tuple for each language)."""
  mewslix = tmp_path / "mewslix"
  _jsonl(mewslix / "wikinews_mentions-test.jsonl", [_HELSINKI, _KYIV])
  _jsonl(mewslix / "candidate_set_entities.jsonl", _ENTITIES)
  data = tasks.discover(XTREME_R.task("mewslix"), data_dir=tmp_path)
  assert data.languages("test") == tuple(sorted(readers.MEWSLIX_LANGUAGES))
  from polyglot.eval import readers as core_readers  # pylint: disable=g-import-not-at-top
  en, uk = (core_readers.load(data, lang, "test") for lang in ("en", "uk"))
  assert [q.id for q in en.queries] == ["c79595350cc2d5c7f2b095e2cb785212"]
  assert [q.id for q in uk.queries] == ["e-kyiv"] and uk.candidates is en.candidates
  merged = core_readers.merge_retrieval_sets([en, uk], "here")
  assert len(merged.candidates) == 3 and len(merged.queries) == 2


def test_xcopa_without_siqa_is_fine_tuned_on_copa_alone_with_a_notice(tmp_path):
  _xcopa(tmp_path / "xcopa/train-en.jsonl", _copa(EN, EN[::-1], 4))
  data = tasks.discover(XTREME_R.task("xcopa"), data_dir=tmp_path)
  gaps = [str(m) for m in tasks.missing(data, ["en"]) if m.what == tasks.INTERMEDIATE]
  assert gaps == ["xcopa: intermediate missing (en): nothing in siqa/: fine-tuned on its own "
                  "training data alone"]
  _xcopa(tmp_path / "siqa/socialIQa_v1.4_trn.jsonl", [{
      "context": "c", "question": "q", "answerA": "a", "answerB": "b", "answerC": "c",
      "correct": "B"}])
  data = tasks.discover(XTREME_R.task("xcopa"), data_dir=tmp_path)
  assert data.has("en", tasks.INTERMEDIATE) and not [
      m for m in tasks.missing(data, ["en"]) if m.what == tasks.INTERMEDIATE]
  from polyglot.eval import readers as core_readers  # pylint: disable=g-import-not-at-top
  (siqa,) = core_readers.load(data, "en", tasks.INTERMEDIATE)
  assert siqa.choices == ("a", "b", "c") and siqa.label == 1
