"""Mixture schedules (polyglot.data.schedules): rates by step against their formula, the
shares and masking rates a token stream yields in each phase, resume across a phase
boundary, bad schedules, and mmBERT's recipe file."""

import numpy as np
import pytest

from polyglot.data import masking, schedules, streams
from polyglot.errors import ConfigError

SIZES = np.array([1000.0, 100.0, 10.0, 1.0])  # the mixture's sizes
SPAN = 100                                     # language j's ids: 4 + j * SPAN ...
MASK_ID = 4 + SPAN * len(SIZES)
# Phase 0: the 2 largest languages at alpha 1, 30% masked; phase 1 (from batch 40): all 4,
# uniform (alpha 0), 5% masked.
SCHEDULE = schedules.MixtureSchedule(steps=(0, 40), alphas=(1.0, 0.0), languages=(2, None),
                                     mask_rates=(0.3, 0.05))


def stream(schedule=SCHEDULE, batch_size=64, length=34) -> streams.Stream:
  tokens = np.concatenate([4 + j * SPAN + np.arange(2000) % SPAN for j in range(len(SIZES))])
  corpus = streams.Corpus(tokens.astype(np.int32), np.arange(0, 2001 * 4, 2000, dtype=np.int64)[
      :len(SIZES) + 1], tuple(f"l{j}" for j in range(len(SIZES))))
  rates = SIZES ** 0.3 / (SIZES ** 0.3).sum()
  return streams.Stream(corpus, rates, length, batch_size, seed=5, window=8,
                        mlm=masking.MlmConfig(), mask_id=MASK_ID,
                        word_start=np.ones(MASK_ID + 1, bool), schedule=schedule, sizes=SIZES,
                        alpha=0.3)


def take(it, n):
  return [next(it) for _ in range(n)]


def test_rates_follow_the_phases():
  want0 = np.array([1000, 100, 0, 0]) / 1100
  got = SCHEDULE.rates(np.array([0, 39, 40, 10**6]), SIZES, 0.3)
  np.testing.assert_allclose(got, [want0, want0, [0.25] * 4, [0.25] * 4])
  linear = schedules.MixtureSchedule(steps=(0, 100), alphas=(1.0, 0.0),
                                     alpha_interpolation="linear")
  q = SIZES ** 0.5  # halfway
  np.testing.assert_allclose(linear.rates(np.array([50]), SIZES, 0.3)[0], q / q.sum())
  np.testing.assert_allclose(linear.alpha(np.array([0, 25, 100, 200]), 0.3), [1, .75, 0, 0])
  fixed = schedules.MixtureSchedule(mask_rates=(0.2,))
  q = SIZES ** 0.3
  np.testing.assert_allclose(fixed.rates(np.array([7]), SIZES, 0.3)[0], q / q.sum())
  assert fixed.mask_rate(np.array(7), 0.15) == 0.2
  assert schedules.MixtureSchedule().mask_rate(np.array(7), 0.15) == 0.15


def _languages_and_masking(batches):
  """Each row's language (from its ids) and the share of its tokens selected."""
  langs = np.concatenate([(b["targets"][:, 1] - 4) // SPAN for b in batches])
  weights = np.concatenate([b["loss_weights"][:, 1:-1] for b in batches])
  return langs, weights.mean()


def test_a_stream_yields_each_phases_shares_and_masking_rate():
  it = streams.StreamIterator(stream(), {}, workers=1)
  try:
    phase0, phase1 = take(it, 40), take(it, 40)
  finally:
    it.close()
  for batches, want, mask_rate in ((phase0, [1000 / 1100, 100 / 1100, 0, 0], 0.3),
                                   (phase1, [0.25] * 4, 0.05)):
    langs, selected = _languages_and_masking(batches)
    shares = np.bincount(langs, minlength=4) / len(langs)  # 2,560 rows: sd <= 0.009
    np.testing.assert_allclose(shares, want, atol=0.03)
    assert abs(selected - mask_rate) < 0.01, selected  # 81,920 tokens
  # A wrong schedule fails these bounds: the mixture's own rates (alpha 0.3, all languages).
  langs, _ = _languages_and_masking(phase0)
  q = SIZES ** 0.3 / (SIZES ** 0.3).sum()
  assert np.abs(np.bincount(langs, minlength=4) / len(langs) - q).max() > 0.1


@pytest.mark.parametrize("workers", [1, 2])
def test_resuming_across_a_phase_boundary_gives_the_same_batches(workers):
  s = stream(batch_size=16)
  whole = streams.StreamIterator(s, {}, workers=workers)
  first = streams.StreamIterator(s, {}, workers=workers)
  try:
    want = take(whole, 70)
    got = take(first, 33)
    state = first.get_state()
  finally:
    whole.close()
    first.close()
  resumed = streams.StreamIterator(s, {}, workers=workers)
  try:
    resumed.set_state(state)
    got += take(resumed, 37)
  finally:
    resumed.close()
  for a, b in zip(want, got, strict=True):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  langs, _ = _languages_and_masking(got[40:])
  assert set(langs.tolist()) == {0, 1, 2, 3}  # the boundary was crossed: all languages in


@pytest.mark.parametrize("kwargs, needle", [
    ({"steps": (5, 10)}, "phase starts begin at 0 and increase"),
    ({"steps": (0, 10, 10)}, "phase starts begin at 0 and increase"),
    ({"steps": (0, 10), "alphas": (0.5,)}, "one value per phase"),
    ({"alphas": (1.5,)}, "exponents in [0, 1]"),
    ({"alpha_interpolation": "cosine"}, "use one of"),
    ({"steps": (0, 10), "languages": (100, 60)}, "do not decrease"),
    ({"steps": (0, 10), "languages": (None, 60)}, "do not decrease"),
    ({"steps": (0, 10), "languages": (0, 60)}, "counts >= 1"),
    ({"mask_rates": (0.0,)}, "rates in (0, 1]")])
def test_bad_schedules_are_config_errors(kwargs, needle):
  with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[").replace("]", r"\]")):
    schedules.MixtureSchedule(**kwargs)


def test_a_language_that_enters_without_tokens_is_an_error():
  s = stream()
  corpus = streams.Corpus(s.corpus.tokens[:4000], np.array([0, 2000, 4000, 4000, 4000]),
                          s.corpus.names)
  streams.Stream(corpus, s.rates, 34, 8, 5, 8, s.mlm, MASK_ID, s.word_start,
                 schedules.MixtureSchedule(languages=(2,)), SIZES, 0.3)  # l2, l3 never enter
  with pytest.raises(Exception, match="language l2 has no training tokens"):
    streams.Stream(corpus, s.rates, 34, 8, 5, 8, s.mlm, MASK_ID, s.word_start, SCHEDULE,
                   SIZES, 0.3)
  with pytest.raises(ConfigError, match="asks for 5 languages; the mixture has 4"):
    schedules.MixtureSchedule(languages=(5,)).check_languages(4)


LANGS = ("eng_Latn", "deu_Latn", "rus_Cyrl", "arb_Arab", "hin_Deva", "swh_Latn")


def test_mmbert_recipe_refuses_a_prediction_rate_below_its_masking(tmp_path, corpus):
  """runs/pretrain_mmbert.gin masks 30% in its first phase: a prediction rate of 0.3 would
  leave predictions out, a ConfigError naming both (the recipe itself runs in
  tests/test_commands.py)."""
  from polyglot import train  # pylint: disable=g-import-not-at-top
  (tmp_path / "cc100").mkdir()
  for lang in LANGS:
    (tmp_path / "cc100" / f"{lang}.txt").write_text("\n".join(corpus.texts[lang]) + "\n",
                                                   encoding="utf-8")
  with pytest.raises(ConfigError, match=r"LossConfig.prediction_rate=0.3 is too small for "
                     r"MixtureSchedule.mask_rates up to 0.3"):
    train.parse_gin(["runs/pretrain_mmbert.gin"],
                    [f"TEXT_DIR='{tmp_path / 'cc100'}'", "VOCAB=None", "PREDICTION_RATE=0.3"])


def test_training_streams_take_the_schedule_of_the_train_config():
  """`train.host_data` hands TrainConfig.schedule to the MLM training stream: one language
  (the largest) until step 3, then all six; held-out data and other layouts keep theirs."""
  import tasks  # pylint: disable=g-import-not-at-top
  from polyglot import objectives, train  # pylint: disable=g-import-not-at-top
  mixture = tasks.register_embedded("schedule_six", languages=list(LANGS)).name
  schedule = schedules.MixtureSchedule(steps=(0, 3), languages=(1, None))
  tc = train.TrainConfig(mixture=mixture, batch_size=32, seq_len=32, schedule=schedule)
  data = train.host_data(tc, objectives.DataSpec(mixture, "mlm", 32, 32), "train", 0)
  try:
    [part] = data.parts
    assert part.stream.schedule == schedule
    rows = [next(data)["targets"] for _ in range(6)]
  finally:
    part.close()
  vocab = part.stream.corpus
  firsts = {lang: set(vocab.tokens[vocab.offsets[j]:vocab.offsets[j + 1]].tolist())
            for j, lang in enumerate(vocab.names)}
  def languages_of(batch):
    return {n for n, toks in firsts.items() for row in batch if set(row[1:-1]) <= toks}
  assert len(set().union(*map(languages_of, rows[:3]))) == 1
  assert len(set().union(*map(languages_of, rows[3:]))) >= 4
