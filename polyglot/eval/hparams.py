"""Evaluation settings: fine-tuning (`TaskHparams`), retrieval (`RetrievalHparams`), the run.

Defaults are XTREME's published settings for base-size models, from the
scripts of google-research/xtreme (`scripts/train_{xnli,pawsx}.sh`): AdamW,
learning rate 2e-5, 5 epochs, effective batch 32 (8 per step x 4 accumulated),
128 pieces, no warm-up or weight decay, linear decay to 0, gradient clipping
at 1.0 (`third_party/run_classify.py` defaults). `gin/eval/xtreme.gin` sets
the other tasks (scoped by task name); gin is bound in
`polyglot/configurables.py`, not here.

`fit` adapts a task's settings to the evaluated checkpoint, except those the
user set (`--gin_file`, `--gin.X`; gin/eval/xtreme.gin's values are not the
user's): sequence lengths are cut to the model's positions
(`EncoderConfig.max_len`), and the retrieval layer follows the depth
(`retrieval_layer`): XTREME's published layer for its depths (hidden state 8
of 12 for base, 14 of 24 for large), otherwise round(2/3 x num_layers), the
fraction of XTREME's 8 of 12. Each change is a notice; a user's value that
does not fit is an error.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from polyglot.errors import ConfigError

POOLINGS = ("mean", "cls")

# XTREME's retrieval layer by encoder depth (hidden states, 0 = the embeddings):
# 8 of 12 for base, 14 of 24 for large (`RetrievalHparams`).
XTREME_LAYERS = {12: 8, 24: 14}


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
  `run_tatoeba.sh`); a run picks it by depth unless the user sets it
  (`retrieval_layer`). Mean pooling averages every non-padding position, `<s>`
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
class EvalConfig:
  """Run-wide settings of `python -m polyglot.eval`.

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
    c = "EvalConfig"
    _check(self.predict_batch_size >= 1, c, "predict_batch_size", self.predict_batch_size,
           "use >= 1")
    _check(self.max_train_examples >= 0, c, "max_train_examples", self.max_train_examples,
           "use >= 0 (0: all)")
    _check(self.max_eval_examples >= 0, c, "max_eval_examples", self.max_eval_examples,
           "use >= 0 (0: all)")


def retrieval_layer(num_layers: int) -> int:
  """XTREME's layer for an encoder of `num_layers`: its published one for base (8 of 12)
  and large (14 of 24), otherwise round(2/3 x num_layers) (the fraction of 8 of 12)."""
  return XTREME_LAYERS.get(num_layers, round(2 * num_layers / 3))


@dataclasses.dataclass(frozen=True)
class Fit:
  """A task's settings fitted to a checkpoint, a notice per change, and what does not fit."""
  hparams: TaskHparams | RetrievalHparams
  notices: tuple[str, ...] = ()
  errors: tuple[str, ...] = ()


def fit(name: str, hp: TaskHparams | RetrievalHparams, num_layers: int, max_len: int,
        user_set: Collection[str] = ()) -> Fit:
  """Task `name`'s settings for an encoder of `num_layers` and `max_len` positions.

  Fields named in `user_set` are kept (an error when they do not fit); the
  others are fitted as the module docstring says.
  """
  changes, notices, errors = {}, [], []
  key = f"{name}/{type(hp).__name__}.max_seq_length"
  if hp.max_seq_length > max_len and "max_seq_length" in user_set:
    errors.append(f"{key}={hp.max_seq_length} exceeds the checkpoint's max_len={max_len}: "
                  f"pass --gin.{key}={max_len}")
  elif hp.max_seq_length > max_len:
    changes["max_seq_length"] = max_len
    notices.append(f"{key}: {hp.max_seq_length} is longer than the checkpoint's max_len, "
                   f"using {max_len}")
  if isinstance(hp, RetrievalHparams):
    key, layer = f"{name}/RetrievalHparams.layer", retrieval_layer(num_layers)
    if "layer" in user_set and hp.layer > num_layers:
      errors.append(f"{key}={hp.layer} is out of range for the checkpoint's {num_layers}-layer "
                    f"encoder: pass --gin.{key}=<0..{num_layers}>")
    elif "layer" not in user_set and hp.layer != layer:
      changes["layer"] = layer
      notices.append(f"{key}: using hidden state {layer} of the checkpoint's {num_layers}-layer "
                     f"encoder, not {hp.layer} (XTREME's layer for its depth, else 2/3 of it)")
  try:
    return Fit(dataclasses.replace(hp, **changes), tuple(notices), tuple(errors))
  except ConfigError as e:  # too few positions for the task (TaskHparams needs 8)
    return Fit(hp, (), (*errors, f"{name}: the checkpoint's max_len={max_len} is too short: "
                                 f"{e}"))
