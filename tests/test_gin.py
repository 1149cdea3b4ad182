"""Every gin file parses with unknown bindings rejected; runs build their RunConfig."""
import pathlib

import gin
import pytest

from polyglot import configurables, train
from polyglot.errors import ConfigError

GIN = pathlib.Path(__file__).resolve().parents[1] / "gin"
FILES = sorted(str(p.relative_to(GIN)) for p in GIN.rglob("*.gin"))


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  gin.add_config_file_search_path(str(GIN))
  yield
  gin.clear_config()


def test_there_are_gin_files_of_every_kind():
  kinds = {f.split("/")[0] for f in FILES}
  assert {"models", "mesh", "data", "runs", "eval"} <= kinds
  assert "runs/demo.gin" in FILES


@pytest.mark.parametrize("name", FILES)
def test_parses_strictly(name):
  gin.parse_config_file(str(GIN / name), skip_unknown=False)


def test_demo_builds_its_run_config():
  run = train.parse_gin(["runs/demo.gin"], ["NUM_STEPS = 7"])
  assert run.model.num_layers == 2 and run.train.num_steps == 7
  assert run.train.mixture == "embedded" and run.mesh.data == -1


def test_model_files_select_their_presets():
  for name, layers in (("base", 12), ("large", 24), ("xl", 36)):
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(GIN / f"models/{name}.gin")], [])
    run = configurables.run_config()
    assert run.model.num_layers == layers and run.model.dtype == "bfloat16"


def test_unknown_binding_is_a_config_error():
  with pytest.raises(ConfigError, match="no_such_field"):
    train.parse_gin(["runs/demo.gin"], ["OptimConfig.no_such_field = 1"])


def test_moe_and_loss_macros_reach_their_configs():
  gin.parse_config_files_and_bindings([str(GIN / "models/moe_base_e8.gin")],
                                      ["MOE_GROUP_SIZE = 512", "NUM_EXPERTS = 16"])
  moe = configurables.run_config().model.moe
  assert (moe.group_size, moe.num_experts, moe.top_k) == (512, 16, 2)
  gin.clear_config()
  gin.parse_config_file(str(GIN / "runs/pretrain_base.gin"), skip_unknown=False)
  assert str(gin.query_parameter("LossConfig.prediction_rate")) == "%PREDICTION_RATE"
  assert gin.query_parameter("%PREDICTION_RATE") == 0.3


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  """A text directory and a Moses pair, one set for the module: the recipes register their
  mixtures ('text', 'opus') by name, once per process."""
  root = tmp_path_factory.mktemp("corpora")
  (root / "text").mkdir()
  (root / "text" / "sw.txt").write_text("Habari ya dunia.\nKaribu sana.\n")
  (root / "opus").mkdir()
  (root / "opus" / "en-sw.en").write_text("Hello world.\nWelcome.\n")
  (root / "opus" / "en-sw.sw").write_text("Habari ya dunia.\nKaribu.\n")
  return root


def test_infoxlm_recipe_builds_mlm_tlm_xlco_with_infoxlms_settings(corpora):
  run = train.parse_gin(["runs/pretrain_infoxlm.gin"], [
      f"TEXT_DIR = '{corpora / 'text'}'", f"PARALLEL_DIR = '{corpora / 'opus'}'",
      "VOCAB = None", "INIT_FROM = '/ckpt/xlmr-base'"])
  mlm, tlm, xlco = run.objectives
  assert type(mlm).__name__ == "MLM" and tlm.mixture == xlco.mixture == "opus"
  assert (xlco.layer, xlco.queue_size, xlco.momentum, xlco.temperature) == (None, 131072,
                                                                            0.9999, 0.25)
  assert run.model.dropout_rate == run.model.attention_dropout_rate == 0.0
  assert run.optim.learning_rate == 2e-4 and run.train.batch_size == 2048


def test_xlme_recipe_builds_mrtd_trtd_with_electras_settings(corpora):
  run = train.parse_gin(["runs/pretrain_xlme.gin"], [
      f"TEXT_DIR = '{corpora / 'text'}'", f"PARALLEL_DIR = '{corpora / 'opus'}'",
      "VOCAB = None"])
  mrtd, trtd = run.objectives
  assert type(mrtd).__name__ == "MRTD" and trtd.mixture == "opus" and trtd.seq_len == 256
  for o in (mrtd, trtd):
    assert (o.discriminator_weight, o.generator_size, o.generator_layers) == (50.0, 1 / 3, None)
  assert run.model.num_layers == 12 and run.model.dtype == "bfloat16"
  assert run.optim.learning_rate == 2e-4 and run.train.init_from is None
