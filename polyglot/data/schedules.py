"""How a training mixture changes over the steps of a run: sampling temperature, the
languages sampled, and the masking rate (mmBERT's annealed recipe; Glot500's and XLM-R's
fixed one is no schedule).

A `MixtureSchedule` cuts the run into phases starting at `steps` (the first at 0). Each
phase sets
- `alphas`: the sampling exponent, q_i ∝ n_i^alpha over the phase's languages (n_i: the
  size the mixture was registered with); `alpha_interpolation="linear"` moves it linearly
  from one phase's value to the next's over the phase (constant after the last start);
- `languages`: the number of languages sampled, the largest first (None: all); a
  language, once in, stays;
- `mask_rates`: the share of tokens masked.
An empty tuple leaves that setting to the mixture (`alpha`) or `TrainConfig.mask_rate`.

Batch b of a token stream is made at step b (one batch per step per data shard), so the
batch a step gets is a function of the step alone and resuming in any phase gives the
batches of an uninterrupted run (`polyglot.data.streams`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from polyglot.errors import ConfigError

INTERPOLATIONS = ("constant", "linear")


@dataclasses.dataclass(frozen=True)
class MixtureSchedule:
  """Phases of a run's mixture (see the module docstring)."""
  steps: tuple[int, ...] = (0,)              # phase starts: 0, then strictly increasing
  alphas: tuple[float, ...] = ()             # per phase, or () for the mixture's alpha
  alpha_interpolation: str = "constant"
  languages: tuple[int | None, ...] = ()     # per phase: the n largest languages (None: all)
  mask_rates: tuple[float, ...] = ()         # per phase, or () for TrainConfig.mask_rate

  def __post_init__(self):
    c = "MixtureSchedule"
    steps = list(self.steps)
    if not steps or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
      raise ConfigError(f"{c}.steps={self.steps} is invalid: phase starts begin at 0 and "
                        "increase, e.g. (0, 8000, 9500)")
    for name in ("alphas", "languages", "mask_rates"):
      value = getattr(self, name)
      if value and len(value) != len(steps):
        raise ConfigError(f"{c}.{name}={value} is invalid: give one value per phase "
                          f"({len(steps)}, as {c}.steps), or () to keep it fixed")
    if any(not 0 <= a <= 1 for a in self.alphas):
      raise ConfigError(f"{c}.alphas={self.alphas} is invalid: use exponents in [0, 1]")
    if self.alpha_interpolation not in INTERPOLATIONS:
      raise ConfigError(f"{c}.alpha_interpolation={self.alpha_interpolation!r} is invalid: "
                        f"use one of {INTERPOLATIONS}")
    counts = [n for n in self.languages if n is not None]
    if any(n < 1 for n in counts) or (
        None in self.languages and self.languages[self.languages.index(None):] != (
            (None,) * (len(self.languages) - self.languages.index(None)))) or any(
                b < a for a, b in zip(counts, counts[1:])):
      raise ConfigError(f"{c}.languages={self.languages} is invalid: languages enter and "
                        "stay, so give counts >= 1 that do not decrease (None, all of them, "
                        "only at the end)")
    if any(not 0 < r <= 1 for r in self.mask_rates):
      raise ConfigError(f"{c}.mask_rates={self.mask_rates} is invalid: use rates in (0, 1]")

  def phase(self, step: np.ndarray) -> np.ndarray:
    """Phase index of each step, int64."""
    return np.searchsorted(np.asarray(self.steps), np.asarray(step), side="right") - 1

  def alpha(self, step: np.ndarray, default: float) -> np.ndarray:
    """The sampling exponent at each step, float64."""
    step = np.asarray(step, np.float64)
    if not self.alphas:
      return np.full(step.shape, default)
    values = np.asarray(self.alphas, np.float64)
    if self.alpha_interpolation == "constant":
      return values[self.phase(step)]
    return np.interp(step, np.asarray(self.steps, np.float64), values)

  def active(self, step: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """bool [steps, languages]: the languages sampled at each step, the largest first
    (ties: the earlier language)."""
    step = np.atleast_1d(step)
    if not self.languages:
      return np.ones((len(step), len(sizes)), bool)
    rank = np.empty(len(sizes), np.int64)
    rank[np.argsort(-np.asarray(sizes, np.float64), kind="stable")] = np.arange(len(sizes))
    n = np.array([len(sizes) if k is None else k for k in self.languages])[self.phase(step)]
    return rank[None, :] < n[:, None]

  def rates(self, step: np.ndarray, sizes: np.ndarray, default_alpha: float) -> np.ndarray:
    """float64 [steps, languages], each row summing to 1: the sampling rates at each step."""
    step = np.atleast_1d(step)
    sizes = np.asarray(sizes, np.float64)
    q = np.where(self.active(step, sizes),
                 sizes[None, :] ** self.alpha(step, default_alpha)[:, None], 0.0)
    return q / q.sum(-1, keepdims=True)

  def mask_rate(self, step: np.ndarray, default: float) -> np.ndarray:
    if not self.mask_rates:
      return np.full(np.shape(step), default)
    return np.asarray(self.mask_rates, np.float64)[self.phase(step)]

  def max_mask_rate(self, default: float) -> float:
    return max(self.mask_rates or (default,))

  def check_languages(self, count: int) -> None:
    """The phases' language counts must fit the mixture's `count` languages."""
    counts = [n for n in self.languages if n is not None]
    if counts and counts[-1] > count:
      raise ConfigError(f"MixtureSchedule.languages={self.languages} asks for {counts[-1]} "
                        f"languages; the mixture has {count}: lower the count")
