"""tools/objectives_experiment.py: equal token budgets per arm, the metrics it reads back,
its table and its bad input (its runs are the commands tests/test_commands.py runs)."""
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import objectives_experiment as exp  # noqa: E402  pylint: disable=wrong-import-position


def test_every_arm_trains_on_the_same_number_of_tokens():
  steps = {arm: exp.steps_for(arm, 3_000_000) for arm in exp.ARMS}
  assert steps == {"MLM": 1465, "MLM + TLM": 732, "MLM + TLM + XLCo": 488,
                   "MLM + TLM + XLCo in-batch": 488}
  for arm, n in steps.items():  # within one step of the budget
    per_step = 2048 * arm.count("+") + 2048
    assert abs(n * per_step - 3_000_000) <= per_step / 2


def test_metrics_are_the_last_evaluation_and_the_median_speed(tmp_path):
  rows = [{"step": 10, "split": "train", "loss": 9.0},
          {"step": 20, "split": "train", "loss": 8.0, "tokens_per_s": 100.0},
          {"step": 20, "split": "eval", "mlm_loss": 7.5},
          {"step": 30, "split": "train", "loss": 7.0, "tokens_per_s": 300.0},
          {"step": 40, "split": "train", "loss": 6.0, "tokens_per_s": 200.0},
          {"step": 40, "split": "eval", "mlm_loss": 6.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert exp.metrics(tmp_path) == {"eval_mlm_loss": 6.5, "tokens_per_s": 200.0}
  table = exp.table([{"arm": "MLM", "steps": 1465, "seed": 0, "bible_rev": 12.345,
                      "bible_rev_cls": 1.5, "tatoeba": 3.21, "eval_mlm_loss": 6.5,
                      "tokens_per_s": 15234.6}])
  assert table.splitlines()[-1] == "| MLM | 1465 | 0 | 12.35 | 1.50 | 3.21 | 6.500 | 15,235 |"


def test_a_budget_below_one_step_is_one_line(capsys):
  assert exp.main(["--tokens", "100"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--tokens=100 is below one step of every arm" in err
