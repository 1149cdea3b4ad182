"""Temperature sampling rates and registration of tasks and mixtures."""
import numpy as np
import pytest

from polyglot.data import mixtures
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
