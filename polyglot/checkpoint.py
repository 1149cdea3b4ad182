"""Checkpoints: the only module that touches Orbax.

A checkpoint `<workdir>/checkpoints/<step>/` is self-describing:

  params      model parameters (Orbax StandardSave, restorable onto any mesh)
  opt_state   optimizer state and step counter
  vocab       the SentencePiece model, as bytes
  meta        JSON: model config, model kind, operative gin config, labels
  data        JSON: the input pipeline's state per process

Writes are atomic (Orbax renames a finished temporary directory), so a
partial checkpoint is never listed; a listed one that fails to restore is
skipped with a warning in favour of the one before it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from polyglot.errors import CheckpointError

log = logging.getLogger(__name__)

SUBDIR = "checkpoints"
ITEMS = ("params", "opt_state", "vocab", "meta", "data")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  save_every: int = 1000       # steps between saves (and one at the end)
  keep_last: int = 3           # the newest K are kept ...
  keep_every: int = 0          # ... plus every M-th step forever (0: none)
  async_save: bool = True


@dataclasses.dataclass
class Restored:
  step: int
  params: Any
  opt_state: Any | None
  vocab: bytes
  meta: dict[str, Any]
  data: dict[str, Any] | None


def checkpoint_dir(path: str) -> str:
  """Accepts a workdir or its `checkpoints/` directory; returns the latter."""
  path = os.path.abspath(os.path.expanduser(path))
  sub = os.path.join(path, SUBDIR)
  return sub if os.path.isdir(sub) else path


class Checkpointer:
  """Saves and restores train state plus everything eval and conversion need."""

  def __init__(self, directory: str, cfg: CheckpointConfig = CheckpointConfig(), *,
               read_only: bool = False):
    self.directory = directory
    self.save_every = cfg.save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep_last, keep_period=cfg.keep_every or None,
        enable_async_checkpointing=cfg.async_save,
        create=not read_only)  # a reader never saves; Orbax's read_only mode only adds a warning
    self._manager = ocp.CheckpointManager(directory, options=options, item_names=ITEMS)

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def resolve_step(self, step: int | None = None) -> int:
    """`step` if it is saved, else the newest; a clear error when there is none."""
    steps = self.steps()
    if not steps:
      raise CheckpointError(f"no checkpoint in {self.directory}; pass the workdir of a "
                            "polyglot.train run or its checkpoints/ directory")
    if step is not None and step not in steps:
      raise CheckpointError(f"no step {step} in {self.directory}; available steps: {steps}")
    return steps[-1] if step is None else step

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    """Every `save_every` steps; the trainer forces the last step and preemption saves."""
    return step % self.save_every == 0

  def save(self, step: int, *, params, opt_state, vocab: bytes, meta: dict[str, Any],
           data: dict[str, Any] | None) -> bool:
    """Starts a save (asynchronous by default) unless `step` is saved already."""
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        vocab=ocp.args.ArraySave(np.frombuffer(vocab, np.uint8)),
        meta=ocp.args.JsonSave(meta),
        data=ocp.args.JsonSave(data or {}))
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=args, force=True)

  def restore(self, abstract_params, abstract_opt_state=None, step: int | None = None
              ) -> Restored:
    """The newest restorable checkpoint (or `step`), onto the shardings of the abstract trees.

    Leaves of `abstract_*` are `jax.ShapeDtypeStruct`s with `sharding` set, so a
    checkpoint written on one mesh restores exactly onto another.
    """
    candidates = [step] if step is not None else self.steps()[::-1]
    if not candidates:
      raise CheckpointError(f"no checkpoint in {self.directory}; train first or pass the "
                            "workdir of a finished run")
    errors = []
    for s in candidates:
      try:
        return self._restore(s, abstract_params, abstract_opt_state)
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise CheckpointError(f"checkpoint step {s} in {self.directory} cannot be restored: "
                                f"{str(e).splitlines()[0]}") from e
        log.warning("checkpoint step %d in %s is unreadable (%s); trying the one before",
                    s, self.directory, str(e).splitlines()[0])
        errors.append(s)
    raise CheckpointError(f"no restorable checkpoint in {self.directory} (tried steps {errors})")

  def _restore(self, step: int, abstract_params, abstract_opt_state) -> Restored:
    items = dict(params=ocp.args.StandardRestore(abstract_params),
                 vocab=ocp.args.ArrayRestore(), meta=ocp.args.JsonRestore(),
                 data=ocp.args.JsonRestore())
    if abstract_opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    return Restored(step=step, params=out["params"], opt_state=out.get("opt_state"),
                    vocab=np.asarray(out["vocab"], np.uint8).tobytes(), meta=out["meta"],
                    data=out["data"] or None)

  def read_meta(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
        "meta"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract(tree, shardings) -> Any:
  """ShapeDtypeStructs of `tree`'s leaves, placed on `shardings` (a matching tree)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
