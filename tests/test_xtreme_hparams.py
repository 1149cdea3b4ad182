"""Task hyperparameters: validation, and gin/eval/xtreme.gin binding XTREME's values."""
from pathlib import Path

import pytest

from polyglot.errors import ConfigError
from polyglot.eval.hparams import RetrievalHparams, TaskHparams
from polyglot.eval.xtreme.tasks import BENCHMARK as XTREME

gin = pytest.importorskip("gin")

GIN_FILE = Path(__file__).resolve().parents[1] / "gin" / "eval" / "xtreme.gin"


def test_defaults_are_xtremes_sentence_classification_settings():
  hp = TaskHparams()
  assert (hp.learning_rate, hp.num_train_epochs, hp.batch_size, hp.max_seq_length) == (
      2e-5, 5.0, 32, 128)
  assert RetrievalHparams() == RetrievalHparams(layer=8, pooling="mean", max_seq_length=512,
                                                batch_size=100)


@pytest.mark.parametrize("cls, field, value", [
    (TaskHparams, "learning_rate", 0.0),
    (TaskHparams, "batch_size", 0),
    (TaskHparams, "max_seq_length", 4),
    (TaskHparams, "eval_every_steps", -1),
    (RetrievalHparams, "pooling", "max"),
    (RetrievalHparams, "layer", -1),
])
def test_invalid_values_name_the_field(cls, field, value):
  with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field}={value!r} is invalid"):
    cls(**{field: value})


@pytest.fixture
def parsed_gin():
  """gin/eval/xtreme.gin parsed alone; the settings classes as polyglot registers them."""
  from polyglot import configurables  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin.parse_config_file(str(GIN_FILE), skip_unknown=False)
  yield configurables.TaskHparams, configurables.RetrievalHparams
  gin.clear_config()


def test_gin_file_binds_xtreme_settings_per_task(parsed_gin):
  task_hp, retrieval_hp = parsed_gin
  got = {}
  for name, spec in XTREME.tasks.items():
    with gin.config_scope(name):
      got[name] = task_hp() if spec.fine_tuned else retrieval_hp()
  for name in ("xnli", "pawsx"):
    assert (got[name].learning_rate, got[name].num_train_epochs, got[name].max_seq_length) == (
        2e-5, 5.0, 128)
  for name in ("udpos", "panx"):
    assert (got[name].learning_rate, got[name].num_train_epochs, got[name].seed) == (2e-5, 10.0, 1)
  for name in ("xquad", "mlqa", "tydiqa"):
    hp = got[name]
    assert (hp.learning_rate, hp.num_train_epochs, hp.max_seq_length, hp.warmup_steps,
            hp.weight_decay, hp.eval_every_steps) == (3e-5, 3.0, 384, 500, 1e-4, 0)
  assert all(got[n].batch_size == 32 for n in XTREME.tasks if XTREME.tasks[n].fine_tuned)
  assert got["tatoeba"].pooling == "mean" and got["bucc2018"].pooling == "cls"
  assert got["tatoeba"].layer == got["bucc2018"].layer == 8
  assert isinstance(got["xnli"], TaskHparams)
