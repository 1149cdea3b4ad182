"""Per-device memory of a training step, from the compiler, without allocating anything.

Shapes: b=batch, l=length, v=vocab.

`plan` lowers and compiles the trainer's `train_step` (forward, backward,
clipped AdamW update, with dropout and the MoE aux losses) for abstract, sharded inputs
(`jax.ShapeDtypeStruct`), and reads the compiler's buffer assignment
(`memory_analysis`). Parameters and optimizer state are counted from their
shard shapes; `temp` is everything else XLA keeps live at the peak:
activations saved for the backward pass, gradients, logits, workspaces. On
fake CPU devices (`--xla_force_host_platform_device_count`) the SPMD
partitioning is the one a TPU or GPU would get; fusion and scheduling, and so
`temp`, differ by backend, so treat it as an estimate.
"""
from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from polyglot import objectives, optimizer, sharding, trainer
from polyglot.models import EncoderConfig

BATCH_KEYS = ("input_ids", "targets", "loss_weights", "segment_ids", "positions")


class MemoryPlan(NamedTuple):
  """Bytes per device."""
  params: int
  optimizer: int
  batch: int
  temp: int          # XLA temporaries at the peak
  peak: int          # arguments + outputs - donated + temp
  compile_seconds: float


def shard_bytes(tree: Any, shardings: Any) -> int:
  """Bytes one device holds of `tree` (arrays or shapes) laid out as `shardings`."""
  def nbytes(x, s: NamedSharding) -> int:
    return math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
  return sum(jax.tree.leaves(jax.tree.map(nbytes, tree, shardings)))


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


# What `plan` can train: XLM-R's MLM, or ELECTRA/XLM-E replaced-token detection (MRTD with
# the default generator, 1/3 of the width).
OBJECTIVES = ("mlm", "rtd")


def plan_objectives(objective: str, cfg: EncoderConfig, batch_size: int,
                    seq_len: int) -> tuple[objectives.Objective, ...]:
  if objective == "mlm":
    return objectives.mlm_only(batch_size=batch_size, seq_len=seq_len)
  data = objectives.DataSpec("", "mlm", batch_size, seq_len)
  return (objectives.MRTD().build(data, objectives.LossConfig(), cfg),)


def plan(cfg: EncoderConfig, mesh: Mesh, *, batch_size: int, seq_len: int,
         rules: sharding.Rules = sharding.DEFAULT_RULES, objective: str = "mlm") -> MemoryPlan:
  """Compiles the trainer's `train_step` for `cfg` on `mesh` with a [batch_size, seq_len]
  batch of `objective` (one of OBJECTIVES)."""
  objs = plan_objectives(objective, cfg, batch_size, seq_len)
  setup = trainer.make_setup(cfg, mesh, optim=optimizer.OptimConfig(), num_steps=1000,
                             rules=rules, objectives=objs)
  batch = {o.name: {k: jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32)
                    for k in BATCH_KEYS} for o in objs}
  batch_sh = sharding.batch_shardings(batch, mesh, rules)
  step = jax.jit(trainer.bind_train_step(setup.graphdef, setup.tx, setup.schedule, objs),
                 in_shardings=(setup.shardings, batch_sh, None),
                 out_shardings=(setup.shardings, None), donate_argnums=(0,))
  start = time.perf_counter()
  with sharding.use_mesh(mesh, rules):
    compiled = step.lower(setup.abstract, _abstract(batch, batch_sh),
                          jax.eval_shape(lambda: jax.random.key(0))).compile()
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  return MemoryPlan(
      params=shard_bytes(setup.abstract.params, setup.shardings.params),
      optimizer=shard_bytes(setup.abstract.opt_state, setup.shardings.opt_state),
      batch=shard_bytes(batch, batch_sh),
      temp=stats.temp_size_in_bytes,
      peak=(stats.argument_size_in_bytes + stats.output_size_in_bytes
            - stats.alias_size_in_bytes + stats.temp_size_in_bytes),
      compile_seconds=seconds)
