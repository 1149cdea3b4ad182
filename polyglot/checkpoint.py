"""Checkpoints: the only module that touches Orbax.

A checkpoint `<workdir>/checkpoints/<step>/` is self-describing:

  params      model parameters (Orbax StandardSave, restorable onto any mesh)
  opt_state   optimizer state and step counter
  vocab       the SentencePiece model, as bytes
  meta        JSON: model config, model kind, operative gin config, labels
  data        JSON: the input pipeline's state per process

Writes are atomic (Orbax renames a finished temporary directory, or on a
bucket writes a commit marker last), so a partial checkpoint is never listed.
A listed one that fails to restore in a training run is damaged: it is moved
aside (`<step>.damaged-<time>`, never deleted) with a warning naming it, and
the run resumes from the one before it and rewrites the later steps. Readers
(`polyglot.load`, export, evaluation) never change the directory: a damaged
step is an error naming it and the intact steps to pass instead. A
checkpoint that holds another model than the one asked for (other shapes or
parameters) is an error saying so, not damage. Only the items a caller needs
are read (`data` only when resuming training), so damage elsewhere does not
stop a reader. Directories may be local or
URLs (`polyglot.paths`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from polyglot import paths
from polyglot.errors import CheckpointError

log = logging.getLogger(__name__)

SUBDIR = "checkpoints"


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
  """Accepts a workdir or its `checkpoints/` directory (local or a URL); returns the latter."""
  path = paths.resolve(path)
  sub = paths.join(path, SUBDIR)
  return sub if paths.Path(sub).is_dir() else path


def _key(path) -> str:
  """`encoder/layers/0/...`, `opt_state/1/0/count`: one spelling for a tree's key paths and
  for Orbax's metadata, which names list entries '0' and attributes (optax states) 'count'."""
  def name(k):
    for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return "/".join(name(k) for k in path)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """Leaf path -> shape, for arrays, ShapeDtypeStructs and Orbax's ArrayMetadata alike."""
  leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
  return {_key(p): tuple(getattr(x, "shape", ())) for p, x in leaves}


def tree_difference(stored, wanted) -> str | None:
  """The first way `stored` (a checkpoint's tree metadata) differs from `wanted`, or None."""
  have, want = _shapes(stored), _shapes(wanted)
  for key in sorted(want.keys() | have.keys()):
    if key not in have:
      return f"it has no {key}"
    if key not in want:
      return f"it has {key}, which this model has not"
    if have[key] != want[key]:
      return f"{key} has shape {have[key]} there, {want[key]} here"
  return None


class Checkpointer:
  """Saves and restores train state plus everything eval and conversion need."""

  def __init__(self, directory: str, cfg: CheckpointConfig = CheckpointConfig(), *,
               read_only: bool = False):
    self.directory = directory = paths.resolve(directory)
    self.read_only = read_only
    self.save_every = cfg.save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep_last, keep_period=cfg.keep_every or None,
        enable_async_checkpointing=cfg.async_save,
        cleanup_tmp_directories=not read_only,  # a save cut short leaves `<step>.*-tmp*`
        create=not read_only)  # a reader never saves; Orbax's read_only mode only adds a warning
    # Handlers named up front: a fresh reader can then read any item's metadata.
    handlers = dict(params=ocp.StandardCheckpointHandler(),
                    opt_state=ocp.StandardCheckpointHandler(),
                    vocab=ocp.ArrayCheckpointHandler(), meta=ocp.JsonCheckpointHandler(),
                    data=ocp.JsonCheckpointHandler())
    self._manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)
    self._in_flight: int | None = None  # the step of the asynchronous save under way
    self._failed = False                 # a save failed and was reported: nothing to wait for

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
    self.wait()  # the previous save's failure is that save's error
    try:
      started = self._manager.save(step, args=args, force=True)
    except Exception as e:  # pylint: disable=broad-except  (storage: disk, permissions, bucket)
      raise self._save_failed(step, e) from None
    self._in_flight = step
    return started

  def _save_failed(self, step: int | None, e: Exception) -> CheckpointError:
    """The one error of a failed save, once the saves in flight have ended."""
    try:
      self._manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except  (the same failure, already in hand)
      pass
    self._manager.reload()
    last = self._manager.latest_step()
    kept = f"resume from step {last}" if last is not None else "start again"
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    self._in_flight, self._failed = None, True
    return CheckpointError(f"saving {what} in {self.directory} failed ({reason(e)}): free "
                           f"space or fix the permissions, then run the same command to {kept}")

  def restore(self, abstract_params, abstract_opt_state=None, step: int | None = None
              ) -> Restored:
    """The newest restorable checkpoint (or `step`), onto the shardings of the abstract trees.

    Leaves of `abstract_*` are `jax.ShapeDtypeStruct`s with `sharding` set, so a
    checkpoint written on one mesh restores exactly onto another. Without
    `step`, a writer moves each damaged newer checkpoint aside and takes the
    next; a reader (`read_only`) never changes the directory and fails instead.
    """
    candidates = [step] if step is not None else self.steps()[::-1]
    if not candidates:
      raise CheckpointError(f"no checkpoint in {self.directory}; train first or pass the "
                            "workdir of a finished run")
    for s in candidates:
      # Orbax pads or cuts an array restored onto another shape: check the shapes first.
      self.check_fits(s, abstract_params, abstract_opt_state)
      try:
        return self._restore(s, abstract_params, abstract_opt_state)
      except Exception as e:  # pylint: disable=broad-except
        if step is not None or self.read_only:
          raise self.damaged(s, e) from None
        self.move_aside(s, reason(e))
    raise CheckpointError(f"no restorable checkpoint in {self.directory}: every step was "
                          "damaged and moved aside; start the run again")

  def intact_steps(self) -> list[int]:
    """The steps whose metadata and parameter metadata read (a cheap check, no arrays)."""
    intact = []
    for s in self.steps():
      try:
        self._manager.item_metadata(s)["params"].tree  # pylint: disable=expression-not-assigned
        self._read_meta(s)
      except Exception:  # pylint: disable=broad-except
        continue
      intact.append(s)
    return intact

  def damaged(self, step: int, e: Exception) -> CheckpointError:
    """The reader's error for a step that does not restore: which steps to use instead."""
    others = [s for s in self.intact_steps() if s != step]
    hint = (f"the intact steps are {others}: pass one as the step (e.g. --step={others[-1]})"
            if others else "no other step is intact: resume the run that wrote it")
    return CheckpointError(f"checkpoint step {step} in {self.directory} is damaged "
                           f"({reason(e)}); {hint}")

  def check_fits(self, step: int, abstract_params, abstract_opt_state=None) -> None:
    """Raises a CheckpointError when `step` holds another model (or optimizer) than the
    abstract trees describe; damage (unreadable metadata) is not this error."""
    try:
      stored = self._manager.item_metadata(step)
      trees = {"params": stored["params"].tree}
      if abstract_opt_state is not None:
        trees["opt_state"] = stored["opt_state"].tree
    except Exception:  # pylint: disable=broad-except  (unreadable: damage, not a misfit)
      return
    wanted = {"params": abstract_params, "opt_state": abstract_opt_state}
    for item, tree in trees.items():
      diff = tree_difference(tree, wanted[item])
      if diff:
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory} holds another {item_name(item)} than "
            f"this run ({item}: {diff}): run with the configuration that wrote it (its "
            "config.gin), or pass another workdir")

  def move_aside(self, step: int, reason: str) -> str:
    """Renames a damaged checkpoint to `<step>.damaged-<unix time>` (never deleted)."""
    src = paths.join(self.directory, str(step))
    dst = f"{src}.damaged-{int(time.time())}"
    if jax.process_index() == 0:
      paths.Path(src).rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"polyglot move aside {step}")
    self._manager.reload()
    log.warning("checkpoint step %d in %s cannot be restored (%s): moved aside to %s; "
                "resuming from the one before it", step, self.directory, reason, dst)
    return dst

  def _restore(self, step: int, abstract_params, abstract_opt_state) -> Restored:
    """Reads params, vocab and meta, plus opt_state and data when resuming training."""
    items = dict(params=ocp.args.StandardRestore(abstract_params),
                 vocab=ocp.args.ArrayRestore(), meta=ocp.args.JsonRestore())
    if abstract_opt_state is not None:
      items["opt_state"] = ocp.args.StandardRestore(abstract_opt_state)
      items["data"] = ocp.args.JsonRestore()
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    meta = out["meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"its meta item is not a JSON object: {str(meta)[:80]!r}")
    return Restored(step=step, params=out["params"], opt_state=out.get("opt_state"),
                    vocab=np.asarray(out["vocab"], np.uint8).tobytes(), meta=meta,
                    data=out.get("data") or None)

  def _read_meta(self, step: int) -> dict[str, Any]:
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
        "meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"its meta item is not a JSON object: {str(meta)[:80]!r}")
    return meta

  def read_meta(self, step: int) -> dict[str, Any]:
    """The `meta` item of `step`; a CheckpointError naming the intact steps when it does not
    read."""
    try:
      return self._read_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      raise self.damaged(step, e) from None

  def wait(self) -> None:
    """Waits for the asynchronous save in flight; its failure is a CheckpointError (once)."""
    if self._failed:
      return
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_failed(self._in_flight, e) from None
    self._in_flight = None

  def close(self) -> None:
    self._manager.close()


def fingerprint(directory: str, step: int, item: str = "params") -> str:
  """sha256 (hex) of a saved item's files, names and bytes: what identifies the parameters
  of `<directory>/<step>`, so that a cache keyed by it notices a checkpoint replaced at the
  same path and step."""
  root = paths.join(checkpoint_dir(directory), str(step), item)
  digest = hashlib.sha256()
  found = False
  for f in paths.files_under(root):
    found = True
    digest.update(os.fspath(f)[len(root):].encode() + b"\0")
    digest.update(f.read_bytes())
  if not found:
    raise CheckpointError(f"checkpoint step {step} in {directory} has no {item} item: pass "
                          "the workdir of a finished polyglot.train run")
  return digest.hexdigest()


def reason(e: BaseException) -> str:
  """What failed, in a few words: the operating system's message when TensorStore names an
  errno (`... No space left on device [os_error_code='28']`), else the first line of the
  first error of the chain that says more than "see TensorStore's details" (Orbax wraps
  TensorStore's errors, TensorStore prints a whole spec)."""
  chain: list[BaseException] = []
  while e is not None and len(chain) < 8:
    chain.append(e)
    e = e.__cause__ or e.__context__
  texts = [str(x).strip() for x in chain if str(x).strip()]
  for text in texts:
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
      return os.strerror(int(code.group(1)))
  useful = [t for t in texts if "See full TensorStore details" not in t] or [
      t.split("See full TensorStore details")[0].strip() for t in texts]
  if not useful:
    return type(chain[0]).__name__
  line = re.sub(r' in OCDBT database at [a-z ]*"[^"]*"', "", useful[0].splitlines()[0])
  return line if len(line) <= 200 else line[:197] + "..."


def item_name(item: str) -> str:
  return {"params": "model", "opt_state": "optimizer state"}[item]


def abstract(tree, shardings) -> Any:
  """ShapeDtypeStructs of `tree`'s leaves, placed on `shardings` (a matching tree)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
