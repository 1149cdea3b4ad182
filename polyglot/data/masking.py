"""Masked-LM corruption of a batch of rows, in numpy (BERT section 3.1; XLM-R uses the same).

Each token that is not special (`<s> <pad> </s> <unk>`, `<mask>`) is selected
with probability `mask_rate`; a selected token becomes `<mask>` with
probability `mask_token_rate`, a random piece with `random_token_rate`, else
stays; `loss_weights` is 1 on every selected token (seqio's
EncoderFeatureConverter weights only `<mask>` positions, which drops the
random and kept 20%). Selection is a Bernoulli draw per token (per word with
`whole_word`), as in Hugging Face's DataCollatorForLanguageModeling: the share
is `mask_rate` in expectation, not exactly per row. Words are SentencePiece
words (`▁`-delimited): in scripts written without spaces (Chinese, Thai) one
can span a clause.

Randomness is stateless: batch `index` of a stream seeded `seed` draws from
PCG64DXSM seeded with both, so its masks depend neither on how the stream was
resumed nor on which thread or process masks it.

Masking is applied to whole batches after the input pipeline (`pipeline`), the
one place for every row layout that masks ("mlm", "tlm"): vectorized over the
batch, it costs a fraction of what per-row graph ops cost, and the pipeline's
own state holds no random state for it.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from polyglot.data import ids
from polyglot.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MlmConfig:
  """Masked-LM corruption (BERT section 3.1; XLM-R uses the same 15% and 80/10/10)."""
  mask_rate: float = 0.15
  mask_token_rate: float = 0.8
  random_token_rate: float = 0.1
  whole_word: bool = False  # select whole words (a `▁` piece and its continuations)

  def __post_init__(self):
    c = "MlmConfig"
    for name in ("mask_rate", "mask_token_rate", "random_token_rate"):
      value = getattr(self, name)
      if not 0 <= value <= 1:
        raise ConfigError(f"{c}.{name}={value} is invalid: use a rate in [0, 1]")
    if self.mask_rate == 0:
      raise ConfigError(f"{c}.mask_rate=0 is invalid: use a rate in (0, 1] (0.15 in BERT)")
    if self.mask_token_rate + self.random_token_rate > 1:
      raise ConfigError(f"{c}.random_token_rate={self.random_token_rate} is invalid: "
                        f"mask_token_rate + random_token_rate must be <= 1")


def batch_rng(seed: int, index: int) -> np.random.Generator:
  """The generator of batch `index` of the stream seeded `seed` (both >= 0)."""
  return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence([seed, index])))


_LOW = np.uint64(0xFFFFFFFF)


def _threshold(rate: float) -> int:
  """`rate` as a bound on 32 random bits: P(bits < threshold) = rate."""
  return round(rate * 2**32)


def mask_batch(targets: np.ndarray, rng: np.random.Generator | Sequence[np.random.Generator],
               *, mask_id: int, word_start: np.ndarray, cfg: MlmConfig
               ) -> tuple[np.ndarray, np.ndarray]:
  """targets int32 [n, l] -> (input_ids int32 [n, l], loss_weights int32 [n, l]).

  `rng`: one generator, or one per batch when `targets` holds several batches of equal
  size (each batch masked as on its own, in one pass). Each batch's generator gives 64
  random bits per token: 32 select it, 32 choose its action and random id.
  `word_start` [vocab size] bool marks the pieces that begin a word (`Vocabulary.word_start`).
  """
  rngs = [rng] if isinstance(rng, np.random.Generator) else list(rng)
  if targets.shape[0] % len(rngs):
    raise ValueError(f"{targets.shape[0]} rows do not split into {len(rngs)} equal batches")
  rows = targets.shape[0] // len(rngs)
  bits = np.concatenate([g.bit_generator.random_raw((rows, targets.shape[1])) for g in rngs])
  draw, action = bits & _LOW, bits >> np.uint64(32)
  candidate = (targets >= ids.FIRST_PIECE_ID) & (targets != mask_id)
  if cfg.whole_word:
    # A unit is a word-start piece and the pieces after it; specials split units. Every row
    # begins with a special (`<s>`, or `<pad>` in a padding row), so units stay in their row.
    starts = word_start[targets] | ~candidate
    draw = draw.ravel()[np.cumsum(starts.ravel()) - 1].reshape(targets.shape)
  selected = candidate & (draw < _threshold(cfg.mask_rate))
  mask_below = _threshold(cfg.mask_token_rate)
  random_below = _threshold(cfg.mask_token_rate + cfg.random_token_rate)
  to_mask = selected & (action < mask_below)
  to_random = selected & ~to_mask & (action < random_below)
  # Given `to_random`, `action` is uniform on [mask_below, random_below): scaled to the
  # pieces, it is the random id (each piece's chance within 1/(span/pieces), 0.06% at 10%).
  pieces = mask_id - ids.FIRST_PIECE_ID
  scale = np.uint64((pieces << 32) // max(1, random_below - mask_below))
  random_ids = (((action - mask_below) * scale) >> np.uint64(32)).astype(np.int32)
  random_ids += ids.FIRST_PIECE_ID
  input_ids = np.where(to_mask, np.int32(mask_id), np.where(to_random, random_ids, targets))
  return input_ids.astype(np.int32), selected.astype(np.int32)
