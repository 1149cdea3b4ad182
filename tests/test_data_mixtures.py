"""Temperature sampling rates and registration of tasks and mixtures."""
import numpy as np
import pytest

from polyglot.data import mixtures, pipeline, sources
from polyglot.errors import ConfigError, DataError
import tasks


def test_rates_follow_the_formula():
  sizes = {"a": 1000, "b": 10, "c": 1}
  for alpha in (0.3, 0.5, 1.0, 2.0):
    rates = mixtures.sampling_rates(sizes, alpha)
    expected = {k: v ** alpha / sum(n ** alpha for n in sizes.values()) for k, v in sizes.items()}
    assert rates == pytest.approx(expected)
  assert mixtures.sampling_rates(sizes, 1.0) == pytest.approx({"a": 1000 / 1011, "b": 10 / 1011,
                                                               "c": 1 / 1011})
  low = mixtures.sampling_rates(sizes, 0.3)
  assert low["c"] > 1 / 1011 and low["a"] < 1000 / 1011     # small languages up-sampled


@pytest.mark.parametrize("alpha", [0, -0.5])
def test_alpha_must_be_positive(alpha):
  with pytest.raises(ConfigError) as e:
    mixtures.sampling_rates({"a": 1}, alpha)
  assert "\n" not in str(e.value) and f"alpha={alpha} is invalid" in str(e.value)


def test_languages_without_text_are_refused():
  with pytest.raises(DataError, match="every language needs some text"):
    mixtures.sampling_rates({"a": 10, "b": 0})


def test_embedded_mixture_is_registered_on_import():
  mixture = mixtures.get_provider(tasks.EMBEDDED)
  assert len(mixture.tasks) > 600
  rates = np.array([mixture.get_rate(t) for t in mixture.tasks])
  np.testing.assert_allclose(rates.sum(), 1.0)
  assert mixture.tasks[0].name.startswith("embedded.")


def test_registration_is_idempotent_and_names_are_guarded():
  langs = ["eng_Latn", "swh_Latn"]
  first = tasks.register_embedded("test_mixtures_two", languages=langs)
  assert tasks.register_embedded("test_mixtures_two", languages=langs) is first
  with pytest.raises(ConfigError, match="already registered with other data or settings"):
    tasks.register_embedded("test_mixtures_two", languages=langs, alpha=0.5)
  with pytest.raises(ConfigError, match="already a seqio mixture or task"):
    tasks.register_embedded("embedded.eng_Latn", languages=langs)


def test_unknown_embedded_language_is_one_line():
  with pytest.raises(DataError) as e:
    tasks.register_embedded("test_mixtures_bad", languages=["xxx_Latn"])
  assert "\n" not in str(e.value) and "['xxx_Latn'] are not in the embedded corpus" in str(e.value)


# Three in-memory languages, each one word repeated, of 100 : 10 : 1 lines of ~119 UTF-8
# bytes: n = (11900, 1160, 119), the largest 100x the smallest. Their piece ids are disjoint
# (checked below), so every row of the stream tells its language.
WORDS = {"big": ("water", 20, 100), "mid": ("سلام", 13, 10), "small": ("hello", 20, 1)}
# q_i = n_i^alpha / sum_j n_j^alpha, worked out by hand from n above.
SHARES = {1.0: {"big": 11900 / 13179, "mid": 1160 / 13179, "small": 119 / 13179},
          0.3: {"big": 0.57190, "mid": 0.28444, "small": 0.14366}}
ROWS = 20_000


def _memory_corpus(alpha):
  """(mixture name, sizes in bytes, vocabulary) of WORDS registered at `alpha`."""
  lines = {lang: [" ".join([word] * per_line)] * count
           for lang, (word, per_line, count) in WORDS.items()}
  sizes = {lang: sum(len(l.encode("utf-8")) for l in ls) for lang, ls in lines.items()}
  name = f"test_mixtures_temperature_{alpha:g}".replace(".", "_")
  mixture = mixtures.register_corpus(
      name, {lang: sources.MemorySource(f"{name}.{lang}", ls, 0) for lang, ls in lines.items()},
      sizes, alpha=alpha, spec=("test_mixtures_temperature", tuple(WORDS.items())))
  return name, sizes, mixture.output_features["targets"].vocabulary


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_observed_language_shares_follow_the_temperature(alpha):
  """ROWS rows of the real pipeline (seqio mixture, sampling, packing, masking), unshuffled:
  every training row is one full chunk of one language, drawn independently with
  probability q_i, so the count of language i is Binomial(ROWS, q_i). Each observed share
  must lie within 5 standard deviations, 5 sqrt(q_i (1 - q_i) / ROWS): 0.0105 (big), 0.0100
  (mid), 0.0033 (small) for alpha = 1; 0.0175, 0.0160, 0.0124 for alpha = 0.3. The two
  alphas' shares differ by 0.33, 0.20, 0.13: more than 10 times either bound."""
  name, sizes, vocab = _memory_corpus(alpha)
  assert sizes == {"big": 11900, "mid": 1160, "small": 119}
  total = sum(n ** alpha for n in sizes.values())
  want = {lang: n ** alpha / total for lang, n in sizes.items()}
  assert want == pytest.approx(SHARES[alpha], abs=1e-5)
  mixture = mixtures.get_provider(name)
  for lang, q in want.items():
    assert mixture.get_rate(mixtures.get_provider(f"{name}.{lang}")) == pytest.approx(q, rel=1e-9)
  ids = {lang: set(vocab.encode(word)) for lang, (word, _, _) in WORDS.items()}
  assert not (ids["big"] & ids["mid"] or ids["big"] & ids["small"] or ids["mid"] & ids["small"])
  it = pipeline.make_iterator(name, length=8, batch_size=1000, seed=0, shard_index=0,
                              num_shards=1, shuffle_buffer=0)
  counts = dict.fromkeys(WORDS, 0)
  for _ in range(ROWS // 1000):
    pieces = next(it)["targets"][:, 1:-1]                    # [rows, 6], between <s> and </s>
    found = {lang: np.isin(pieces, list(i)).any(1) for lang, i in ids.items()}
    assert (sum(found.values()) == 1).all()                   # one language per row
    for lang in WORDS:
      counts[lang] += int(found[lang].sum())
  for lang, q in want.items():
    bound = 5 * np.sqrt(q * (1 - q) / ROWS)
    assert counts[lang] / ROWS == pytest.approx(q, abs=bound), (lang, counts)
