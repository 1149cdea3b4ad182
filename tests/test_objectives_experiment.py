"""tools/objectives_experiment.py: equal token or FLOPs budgets per arm (FLOPs per step from
polyglot's own accounting), the commands each arm runs, the metrics it reads back, its table
and its bad input (its runs are the commands tests/test_commands.py runs)."""
import argparse
import json
import math
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import objectives_experiment as exp  # noqa: E402  pylint: disable=wrong-import-position

VOCAB = 8000  # the shared data's SentencePiece model, which both recipes tokenize with


def tiny():
  from polyglot import models  # pylint: disable=g-import-not-at-top
  return models.preset("tiny").replace(vocab_size=VOCAB)


def test_every_arm_trains_on_the_same_number_of_tokens():
  steps = {arm: exp.steps_for(arm, 3_000_000) for arm in exp.ARMS}
  assert steps == {"MLM": 1465, "MLM + TLM": 732, "MLM + TLM + XLCo": 488,
                   "MLM + TLM + XLCo in-batch": 488, "MRTD": 1465, "MRTD + TRTD": 732}
  for arm, n in steps.items():  # within one step of the budget
    per_step = 2048 * arm.count("+") + 2048
    assert abs(n * per_step - 3_000_000) <= per_step / 2


def test_each_arm_runs_its_recipe():
  assert {arm: gin_file for arm, (gin_file, *_) in exp.ARMS.items()} == {
      "MLM": "runs/infoxlm_cpu.gin", "MLM + TLM": "runs/infoxlm_cpu.gin",
      "MLM + TLM + XLCo": "runs/infoxlm_cpu.gin", "MLM + TLM + XLCo in-batch":
      "runs/infoxlm_cpu.gin", "MRTD": "runs/xlme_cpu.gin", "MRTD + TRTD": "runs/xlme_cpu.gin"}
  assert exp.bindings("MRTD + TRTD") == ["RunConfig.objectives=[@MRTD(), @TRTD()]"]
  assert exp.bindings("MLM + TLM + XLCo in-batch")[1] == "XLCo.negatives='in_batch'"
  assert exp.DEFAULT_ARMS == ["MLM", "MLM + TLM", "MLM + TLM + XLCo", "MLM + TLM + XLCo in-batch"]


def test_flops_per_step_is_polyglots_accounting_of_the_recipes_objectives():
  from polyglot import objectives, trainer  # pylint: disable=g-import-not-at-top
  cfg, loss = tiny(), objectives.LossConfig()
  mrtd = objectives.MRTD().build(objectives.DataSpec("corpus", "mlm", 16, 128), loss, cfg)
  assert exp.flops_per_step("MRTD") == (trainer.objective_flops(cfg, mrtd), 2048)
  share = math.ceil(0.3 * 128) / 128  # LossConfig.prediction_rate's share of the positions
  mlm_token = trainer.flops_per_token(cfg, 128, share)
  rtd_token = trainer.rtd_flops_per_token(cfg, mrtd.generator, 128, share)
  assert exp.flops_per_step("MLM") == (pytest.approx(2048 * mlm_token), 2048)
  # FLOPs/token: RTD's discriminator has no d x v decoder but adds the generator (1/3 width)
  # with its own head at the predicted positions, and a d x d detection head everywhere.
  mlm_flops, mlm_tokens = exp.flops_per_step("MLM")
  rtd_flops, rtd_tokens = exp.flops_per_step("MRTD")
  assert (rtd_flops / rtd_tokens) / (mlm_flops / mlm_tokens) == pytest.approx(
      rtd_token / mlm_token)
  assert rtd_token > mlm_token and mrtd.generator.hidden_size < cfg.hidden_size
  both_flops, both_tokens = exp.flops_per_step("MRTD + TRTD")  # TRTD: the same batch shape
  assert (both_flops, both_tokens) == (pytest.approx(2 * rtd_flops), 4096)


def test_steps_from_a_flops_budget():
  mlm, _ = exp.flops_per_step("MLM")
  rtd, _ = exp.flops_per_step("MRTD")
  budget = argparse.Namespace(tokens=None, flops=300 * mlm)
  assert exp.budget_steps("MLM", budget) == 300
  assert exp.budget_steps("MRTD", budget) == round(300 * mlm / rtd) < 300
  assert exp.budget_steps("MRTD + TRTD", budget) == round(150 * mlm / rtd)
  assert exp.budget_steps("MRTD", argparse.Namespace(tokens=None, flops=1.0)) == 1
  assert exp.budget_steps("MLM", argparse.Namespace(tokens=3_000_000, flops=None)) == 1465


def test_metrics_are_the_last_evaluation_and_the_median_speed(tmp_path):
  rows = [{"step": 10, "split": "train", "loss": 9.0},
          {"step": 20, "split": "train", "loss": 8.0, "tokens_per_s": 100.0},
          {"step": 20, "split": "eval", "mlm_loss": 7.5},
          {"step": 30, "split": "train", "loss": 7.0, "tokens_per_s": 300.0},
          {"step": 40, "split": "train", "loss": 6.0, "tokens_per_s": 200.0},
          {"step": 40, "split": "eval", "mlm_loss": 6.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert exp.metrics(tmp_path) == {"eval_mlm_loss": 6.5, "tokens_per_s": 200.0}
  rtd = [{"step": 1, "split": "train", "loss": 9.0},  # one step: no timed window
         {"step": 1, "split": "eval", "mrtd_detection_loss": 0.6, "mrtd_generator_loss": 9.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rtd))
  assert exp.metrics(tmp_path) == {"eval_mlm_loss": None, "tokens_per_s": None}


def test_table_shows_flops_udpos_and_na():
  row = {"arm": "MLM", "gin_file": "runs/infoxlm_cpu.gin", "steps": 1465, "seed": 0,
         "flops_per_token": 1538688.0, "train_flops": 4.617e12, "bible_rev": 12.345,
         "bible_rev_cls": 1.5, "tatoeba": 3.21, "udpos": 41.234, "eval_mlm_loss": 6.5,
         "tokens_per_s": 15234.6}
  rtd = row | {"arm": "MRTD", "gin_file": "runs/xlme_cpu.gin", "udpos": None,
               "eval_mlm_loss": None, "tokens_per_s": None}
  lines = exp.table([row, rtd]).splitlines()
  assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 13
  assert lines[2] == ("| MLM | infoxlm_cpu | 1465 | 0 | 1,538,688 | 4.62e+12 | 12.35 | 1.50 | "
                      "3.21 | 41.23 | 6.500 | 15,235 |")
  assert lines[3] == ("| MRTD | xlme_cpu | 1465 | 0 | 1,538,688 | 4.62e+12 | 12.35 | 1.50 | "
                      "3.21 | n/a | n/a | n/a |")


def fake_run(calls: list):
  """`exp.run` that writes what each command would, from its flags."""
  def run(argv, log):
    calls.append(argv)
    flags = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if argv[1] == "polyglot.train":
      rows = [{"step": 5, "split": "train", "loss": 9.0, "tokens_per_s": 1234.0},
              {"step": 5, "split": "eval", "mrtd_detection_loss": 0.6}]
      workdir = pathlib.Path(flags["--workdir"])
      workdir.mkdir(parents=True)
      (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif argv[1] == "polyglot.eval.bitext":
      pathlib.Path(flags["--output"]).write_text(json.dumps({"average": {"mean": 10.0}}))
    else:
      assert argv[1] == "polyglot.eval.xtreme", argv
      scores = {lang: {"score": s, "f1": s} for lang, s in zip(
          ["ar", "de", "en", "fi", "ru", "zh"], [10.0, 20.0, 90.0, 30.0, 40.0, 50.0])}
      out = pathlib.Path(flags["--output_dir"])
      out.mkdir()
      (out / "results.json").write_text(json.dumps({"tasks": {"udpos": {
          "average": 40.0, "languages": scores}}}))
  return run


def test_an_rtd_arm_on_a_flops_budget_end_to_end(tmp_path, monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(exp, "run", fake_run(calls))
  flops = 7 * exp.flops_per_step("MRTD")[0]
  assert exp.main(["--flops", str(flops), "--arms", "MRTD", "--workdir", str(tmp_path),
                   "--output", str(tmp_path / "out.json")]) == 0
  train, *_, xtreme = calls
  assert train[:3] == ["-m", "polyglot.train", "--gin_file=runs/xlme_cpu.gin"]
  assert "--gin.RunConfig.objectives=[@MRTD()]" in train and "--gin.NUM_STEPS=7" in train
  assert [c[1] for c in calls].count("polyglot.eval.bitext") == 3
  assert "--tasks=udpos" in xtreme and "--languages=de,zh,fi,ru,ar" in xtreme
  assert set(exp.UDPOS_FLAGS) <= set(xtreme)
  assert f"--data_dir={exp.parser().get_default('xtreme')}" in xtreme
  [result] = json.loads((tmp_path / "out.json").read_text())
  assert result["udpos"] == 30.0  # the five languages', not the report's average with English
  assert result["train_flops"] == pytest.approx(flops)
  assert result["gin_file"] == "runs/xlme_cpu.gin" and result["eval_mlm_loss"] is None
  assert capsys.readouterr().out.splitlines()[-1].endswith("| 30.00 | n/a | 1,234 |")
  calls.clear()
  assert exp.main(["--tokens", "6144", "--arms", "MRTD", "--workdir", str(tmp_path / "b"),
                   "--no_udpos"]) == 0
  assert "--gin.NUM_STEPS=3" in calls[0] and [c[1] for c in calls][-1] == "polyglot.eval.bitext"


def test_a_budget_below_one_step_is_one_line(capsys):
  assert exp.main(["--tokens", "100"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--tokens=100 is below one step of every arm" in err


@pytest.mark.parametrize("argv", [[], ["--tokens", "3000000", "--flops", "1e12"]],
                         ids=["neither", "both"])
def test_tokens_or_flops_exactly_one_is_one_line(argv, capsys):
  assert exp.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1
  assert err.startswith("error: pass exactly one of --tokens and --flops") and "e.g." in err


def test_a_flops_budget_must_be_positive(capsys):
  with pytest.raises(SystemExit) as done:
    exp.main(["--flops", "-1"])
  assert done.value.code == 2
  assert "argument --flops: -1.0 is invalid: use a number > 0" in capsys.readouterr().err
