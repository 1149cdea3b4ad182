"""Pretraining objectives: what the trainer optimises, one module per objective.

    mlm.py    masked language modelling (XLM-R), and the masked-LM loss TLM shares
    tlm.py    translation language modelling (XLM) on translation pairs
    xlco.py   cross-lingual contrast (InfoXLM) with a momentum encoder and a queue
    rtd.py    replaced-token detection (ELECTRA; XLM-E's MRTD and TRTD) with a generator

A run trains a weighted sum of objectives (`RunConfig.objectives`, gin
`[@MLM(), @TLM(), @XLCo()]`, `[@MRTD(), @TRTD()]`; MLM alone by default), each on its own batch
from its own mixture, in one jitted step (`polyglot.trainer.train_step`).

A new objective goes in its own module here and provides (see `base.py`):
a gin config dataclass with `build(defaults, loss_cfg, model_cfg)` that
checks its settings and returns an `Objective`; the `Objective` itself:
`name`, `weight`, `data` (a `DataSpec`: mixture, feature layout, rows,
length), `grads(...)`, and, if it keeps state outside the parameters,
`init_state`/`state_shardings`/`update_state`. If it needs a new batch
layout, add it to `polyglot/data/pipeline.py` (FEATURES) with its converter
in `polyglot/data/preprocessors.py`; register the config in
`polyglot/configurables.py`. Every objective trains `polyglot.models.MaskedLM`
parameters (RTD's a `MaskedLM` that also holds the generator and the detection
head: `generator_of`), so checkpoints load, evaluate and export like an MLM
one; the checkpoint's meta records the objectives (`describe`).
"""
from __future__ import annotations

from typing import Sequence

from polyglot.errors import ConfigError
from polyglot.objectives.base import Batch, DataSpec, Metrics, Objective
from polyglot.objectives.mlm import MLM, LossConfig, MaskedLanguageModel
from polyglot.objectives.tlm import TLM
from polyglot.objectives.rtd import MRTD, TRTD, ReplacedTokenDetection
from polyglot.objectives.xlco import XLCo, Contrastive

__all__ = ["Batch", "DataSpec", "Metrics", "Objective", "MLM", "TLM", "XLCo", "LossConfig",
           "MaskedLanguageModel", "Contrastive", "MRTD", "TRTD", "ReplacedTokenDetection", "build",
           "generator_of", "mlm_only"]


def build(configs: Sequence, defaults: DataSpec, loss_cfg: LossConfig,
          model_cfg) -> tuple[Objective, ...]:
  """The objectives of `configs` (gin MLM/TLM/XLCo), checked: at least one, each once,
  positive weights."""
  if not configs:
    raise ConfigError("RunConfig.objectives is empty: pass at least one, e.g. [@MLM()]")
  built = tuple(c.build(defaults, loss_cfg, model_cfg) for c in configs)
  names = [o.name for o in built]
  if len(set(names)) != len(names):
    raise ConfigError(f"RunConfig.objectives names {names}: use each objective once")
  for o in built:
    if not o.weight > 0:
      raise ConfigError(f"{type(configs[names.index(o.name)]).__name__}.weight={o.weight} is "
                        "invalid: use > 0")
  generators = {o.generator for o in built if isinstance(o, ReplacedTokenDetection)}
  if len(generators) > 1:
    raise ConfigError("MRTD and TRTD build different generators: they share one, so set the "
                      "same generator_size and generator_layers on both")
  return built


def generator_of(objectives: Sequence[Objective]):
  """The RTD generator's EncoderConfig the objectives train, or None (no RTD objective)."""
  return next((o.generator for o in objectives if isinstance(o, ReplacedTokenDetection)), None)


def mlm_only(loss_cfg: LossConfig = LossConfig(), mixture: str = "embedded",
             batch_size: int = 16, seq_len: int = 128) -> tuple[Objective, ...]:
  """MLM alone (XLM-R's recipe), e.g. for benchmarks and tests of the step."""
  return (MaskedLanguageModel("mlm", 1.0, DataSpec(mixture, "mlm", batch_size, seq_len),
                              loss_cfg),)
