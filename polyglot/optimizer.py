"""The optimizer: optax AdamW with warmup, decay, a weight-decay mask and clipping."""
from __future__ import annotations

import dataclasses

import jax
import optax

from polyglot.errors import ConfigError

SCHEDULES = ("linear", "cosine", "constant")
# Parameters named like this are never decayed (BERT/RoBERTa practice).
NO_DECAY = ("bias", "scale")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW as RoBERTa/XLM-R pretrain (Liu et al., 2019, table 9: betas 0.9/0.98, eps 1e-6)."""
  learning_rate: float = 6e-4
  warmup_steps: int = 10_000
  schedule: str = "linear"       # decay after warmup, to end_learning_rate at the last step
  end_learning_rate: float = 0.0
  b1: float = 0.9
  b2: float = 0.98
  eps: float = 1e-6
  weight_decay: float = 0.01
  clip_norm: float = 1.0         # global-norm clipping; 0 disables it

  def __post_init__(self):
    def check(ok, name, fix):
      if not ok:
        raise ConfigError(f"OptimConfig.{name}={getattr(self, name)!r} is invalid: {fix}")
    check(self.learning_rate > 0, "learning_rate", "use a positive learning rate")
    check(self.warmup_steps >= 0, "warmup_steps", "use >= 0")
    check(self.schedule in SCHEDULES, "schedule", f"use one of {SCHEDULES}")
    check(0 <= self.end_learning_rate <= self.learning_rate, "end_learning_rate",
          "use a value in [0, learning_rate]")
    check(0 <= self.b1 < 1, "b1", "use a value in [0, 1)")
    check(0 <= self.b2 < 1, "b2", "use a value in [0, 1)")
    check(self.eps > 0, "eps", "use a value > 0")
    check(self.weight_decay >= 0, "weight_decay", "use a value >= 0")
    check(self.clip_norm >= 0, "clip_norm", "use a value >= 0 (0 disables clipping)")


def learning_rate_schedule(cfg: OptimConfig, num_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then `cfg.schedule` down to the end rate at `num_steps`."""
  warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
  decay_steps = max(num_steps - warmup, 1)
  if cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.learning_rate)
  elif cfg.schedule == "linear":
    decay = optax.linear_schedule(cfg.learning_rate, cfg.end_learning_rate, decay_steps)
  else:
    decay = optax.cosine_decay_schedule(cfg.learning_rate, decay_steps,
                                        alpha=cfg.end_learning_rate / cfg.learning_rate)
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.learning_rate, warmup), decay], [warmup])


def decay_mask(params):
  """True for the parameters that take weight decay: all but biases and LayerNorm scales."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], "key", path[-1])) not in NO_DECAY, params)


def make_optimizer(cfg: OptimConfig, num_steps: int) -> tuple[optax.GradientTransformation,
                                                               optax.Schedule]:
  """(optimizer, learning-rate schedule) for a run of `num_steps` updates."""
  schedule = learning_rate_schedule(cfg, num_steps)
  adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=decay_mask)
  if cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw), schedule
  return adamw, schedule
