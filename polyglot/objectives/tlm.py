"""Translation language modelling (XLM: Conneau & Lample, 2019, section 3.3).

A translation pair becomes one sequence, `<s> x </s></s> y </s>` in XLM-R's
convention, with positions restarting at the second part as XLM resets
them for the target sentence; tokens are masked on both sides as in MLM
(same rates, 80/10/10), so a masked word can be predicted from its
translation. The pipeline's "tlm" layout makes these rows
(`polyglot.data.preprocessors.tlm_rows`): pairs are packed several to a row,
each pair its own segment, so no pair attends to another. The loss is MLM's
(`mlm.MaskedLanguageModel`), reported as `tlm_loss` and `tlm_accuracy`.
"""
from __future__ import annotations

import dataclasses

from polyglot.objectives import mlm
from polyglot.objectives.base import DataSpec, Objective, require_parallel_mixture


@dataclasses.dataclass(frozen=True)
class TLM(mlm.MLM):
  """gin `TLM`: `mixture` is a parallel mixture (tasks/parallel.py); `batch_size` and
  `seq_len` default to TrainConfig's."""
  features = "tlm"
  name = "tlm"

  def build(self, defaults: DataSpec, loss_cfg: mlm.LossConfig, model_cfg) -> Objective:
    require_parallel_mixture("TLM", self.mixture)
    return super().build(defaults, loss_cfg, model_cfg)
