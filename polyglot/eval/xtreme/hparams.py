"""XTREME settings: fine-tuning (`TaskHparams`), retrieval (`RetrievalHparams`), the run.

Defaults are XTREME's published settings for base-size models, from the
scripts of google-research/xtreme (`scripts/train_{xnli,pawsx}.sh`): AdamW,
learning rate 2e-5, 5 epochs, effective batch 32 (8 per step x 4 accumulated),
128 pieces, no warm-up or weight decay, linear decay to 0, gradient clipping
at 1.0 (`third_party/run_classify.py` defaults). `gin/eval/xtreme.gin` sets
the other tasks (scoped by task name); gin is bound in
`polyglot/configurables.py`, not here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from polyglot.errors import ConfigError

POOLINGS = ("mean", "cls")


def _check(cond: bool, cls: str, name: str, value: Any, fix: str) -> None:
  if not cond:
    raise ConfigError(f"{cls}.{name}={value!r} is invalid: {fix}")


@dataclasses.dataclass(frozen=True)
class TaskHparams:
  """Fine-tuning on English and model selection on the English dev set."""
  learning_rate: float = 2e-5
  num_train_epochs: float = 5.0
  batch_size: int = 32  # examples per optimizer step (XTREME: per-GPU batch x accumulation)
  max_seq_length: int = 128
  warmup_steps: int = 0
  weight_decay: float = 0.0
  adam_epsilon: float = 1e-8
  max_grad_norm: float = 1.0
  # Evaluate on English dev every this many steps and keep the best
  # (`--save_steps` with `--save_only_best_checkpoint`); 0 keeps the last step.
  eval_every_steps: int = 100
  seed: int = 42
  # Stop after this many optimizer steps instead of `num_train_epochs` (HF's
  # `--max_steps`); 0 trains for the epochs. Smoke runs and tests set it.
  max_steps: int = 0

  def __post_init__(self):
    c = "TaskHparams"
    _check(self.learning_rate > 0, c, "learning_rate", self.learning_rate, "use a value > 0")
    _check(self.num_train_epochs > 0, c, "num_train_epochs", self.num_train_epochs,
           "use a value > 0")
    _check(self.batch_size >= 1, c, "batch_size", self.batch_size, "use >= 1")
    _check(self.max_seq_length >= 8, c, "max_seq_length", self.max_seq_length,
           "use >= 8 (room for special tokens and text)")
    _check(self.warmup_steps >= 0, c, "warmup_steps", self.warmup_steps, "use >= 0")
    _check(self.weight_decay >= 0, c, "weight_decay", self.weight_decay, "use >= 0")
    _check(self.adam_epsilon > 0, c, "adam_epsilon", self.adam_epsilon, "use a value > 0")
    _check(self.max_grad_norm > 0, c, "max_grad_norm", self.max_grad_norm, "use a value > 0")
    _check(self.eval_every_steps >= 0, c, "eval_every_steps", self.eval_every_steps,
           "use >= 0 (0: no model selection, keep the last step)")
    _check(self.max_steps >= 0, c, "max_steps", self.max_steps,
           "use >= 0 (0: train for num_train_epochs)")


@dataclasses.dataclass(frozen=True)
class RetrievalHparams:
  """Sentence embeddings from the frozen encoder (XTREME `scripts/run_*.sh`).

  `layer` indexes the encoder's hidden states, 0 being the embedding output.
  XTREME's `--specific_layer 7` indexes `all_layer_outputs[-num_layers:]`,
  the block outputs without the embeddings (`third_party/run_retrieval.py`),
  so it is hidden state 8 of a 12-layer model (14 of 24 for XLM-R large,
  `run_tatoeba.sh`). Mean pooling averages every non-padding position, `<s>`
  and `</s>` included (`pool_skip_special_token` off); BUCC pools the first
  position (`run_bucc2018.sh --pool_type cls`).
  """
  layer: int = 8
  pooling: str = "mean"
  max_seq_length: int = 512
  batch_size: int = 100

  def __post_init__(self):
    c = "RetrievalHparams"
    _check(self.layer >= 0, c, "layer", self.layer, "use >= 0 (0 = embedding output)")
    _check(self.pooling in POOLINGS, c, "pooling", self.pooling, f"use one of {POOLINGS}")
    _check(self.max_seq_length >= 3, c, "max_seq_length", self.max_seq_length,
           "use >= 3 (<s>, a piece, </s>)")
    _check(self.batch_size >= 1, c, "batch_size", self.batch_size, "use >= 1")


@dataclasses.dataclass(frozen=True)
class XtremeConfig:
  """Run-wide settings of `python -m polyglot.eval.xtreme`.

  `max_train_examples` and `max_eval_examples` are for smoke runs and tests
  only: they keep the first N English training examples, and the first N
  examples (Tatoeba pairs; BUCC gold pairs plus N distractors per side) of
  every evaluation language and split, so scores are not comparable to
  XTREME's. 0 keeps everything.
  """
  predict_batch_size: int = 64  # rows per prediction/dev-evaluation step
  max_train_examples: int = 0
  max_eval_examples: int = 0

  def __post_init__(self):
    c = "XtremeConfig"
    _check(self.predict_batch_size >= 1, c, "predict_batch_size", self.predict_batch_size,
           "use >= 1")
    _check(self.max_train_examples >= 0, c, "max_train_examples", self.max_train_examples,
           "use >= 0 (0: all)")
    _check(self.max_eval_examples >= 0, c, "max_eval_examples", self.max_eval_examples,
           "use >= 0 (0: all)")
