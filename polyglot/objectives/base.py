"""What every pretraining objective provides to the trainer and the input pipeline.

An objective is a small frozen object, built from its gin config before
`jax.jit` (`polyglot.objectives.build`):

- `name`: the key of its batch in the step's batch dict, its metrics' prefix,
  and its entry in the checkpoint's `objectives` meta.
- `weight`: its share of the step's loss, sum_k weight_k x loss_k.
- `data`: a `DataSpec`, what the input pipeline must feed it: a seqio mixture
  or task, the feature layout (`polyglot.data.pipeline.FEATURES`), rows and
  length.
- `grads(params, graphdef, batch, rng, state)`: gradients of its loss w.r.t.
  the parameters on its batch, that loss (extra losses included), metrics,
  and an auxiliary pytree for `update_state`.
- optionally, state that is not trained by gradients (a momentum encoder, a
  queue of negatives): `init_state(params)`, its shardings
  (`state_shardings`), and `update_state(state, params, aux)` after the
  optimizer update. It lives in the train state, is sharded, checkpointed and
  restored with it.
- optionally `evaluate(params, graphdef, batch)` on held-out batches.

Every objective trains the same model (`polyglot.models.MaskedLM`: the
encoder and the MLM head), so checkpoints load, evaluate and export alike
whatever the objectives were.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from polyglot.errors import ConfigError

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What one objective reads: `mixture` laid out as `features`, `batch_size` global rows
  of `seq_len` tokens per step."""
  mixture: str
  features: str
  batch_size: int
  seq_len: int


@dataclasses.dataclass(frozen=True)
class Objective:
  """The base of every objective (see the module docstring); stateless by default."""
  name: str
  weight: float
  data: DataSpec

  def grads(self, params, graphdef: nnx.GraphDef, batch: Batch, rng: jax.Array | None,
            state: Any) -> tuple[Any, jax.Array, Metrics, Any]:
    """(grads, loss, metrics, aux) of this objective's loss on `batch`."""
    raise NotImplementedError

  def tokens(self, batch: Batch) -> jax.Array:
    """The real (non-padding) tokens of its batch."""
    return (batch["segment_ids"] > 0).sum()

  def init_state(self, params) -> Any:
    del params
    return {}

  def state_shardings(self, param_shardings, mesh: jax.sharding.Mesh, rules) -> Any:
    del param_shardings, mesh, rules
    return {}

  def update_state(self, state: Any, params, aux: Any) -> Any:
    del params, aux
    return state

  def evaluate(self, params, graphdef: nnx.GraphDef, batch: Batch) -> Metrics | None:
    del params, graphdef, batch
    return None

  def describe(self) -> dict[str, Any]:
    """What the checkpoint's meta records of this objective."""
    return {"name": self.name, "weight": self.weight, "data": dataclasses.asdict(self.data)}


def require_parallel_mixture(config: str, mixture: str | None) -> None:
  """A ConfigError unless the objective config named `config` reads a (parallel) mixture."""
  if not mixture:
    raise ConfigError(f"{config}.mixture is not set: pass a parallel mixture, e.g. "
                      f"{config}.mixture = @bible_mixture()")
