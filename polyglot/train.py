"""`python -m polyglot.train`: gin-configured MLM pretraining.

    python -m polyglot.train                                  # gin/runs/demo.gin
    python -m polyglot.train --gin_file=runs/pretrain_base.gin --workdir=/ckpt/base \
        --gin.NUM_STEPS=100000

Reads in a fixed order (big_vision's trainer): flags and gin, processes,
logging, mesh, data, model and optimizer shapes, shardings, restore or init,
the jitted step, the loop. The same command runs on every host of a pod.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import logging
import math
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any

from polyglot import _env  # noqa: F401  pylint: disable=unused-import

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyglot import checkpoint as ckpt_lib
from polyglot import metric_writers, models, optimizer, sharding, trainer
from polyglot.errors import CheckpointError, ConfigError, PolyglotError

log = logging.getLogger("polyglot.train")

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / "gin"
DEFAULT_GIN = "runs/demo.gin"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The run: steps, global batch, data, logging cadence."""
  num_steps: int = 300
  batch_size: int = 16                # global rows per step (all hosts together)
  seq_len: int = 128
  seed: int = 0
  mixture: str = "embedded"           # a registered seqio mixture or task (see tasks/)
  mask_rate: float = 0.15             # BERT/XLM-R: 15% of tokens, 80/10/10
  whole_word_masking: bool = False
  shuffle_buffer: int = 512
  log_every: int = 10
  eval_every: int = 100               # 0 disables the held-out evaluation
  eval_batches: int = 4
  init_from: str | None = None        # a polyglot checkpoint whose parameters start the run

  def __post_init__(self):
    for name in ("num_steps", "batch_size", "seq_len", "log_every", "eval_batches"):
      if getattr(self, name) < 1:
        raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} is invalid: use >= 1")
    if self.eval_every < 0:
      raise ConfigError(f"TrainConfig.eval_every={self.eval_every} is invalid: use >= 0")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a run is made of; gin builds it (see gin/runs/)."""
  model: models.EncoderConfig = models.preset("tiny")
  train: TrainConfig = TrainConfig()
  optim: optimizer.OptimConfig = optimizer.OptimConfig()
  loss: trainer.LossConfig = trainer.LossConfig()
  mesh: sharding.MeshConfig = sharding.MeshConfig()
  checkpoint: ckpt_lib.CheckpointConfig = ckpt_lib.CheckpointConfig()
  rules: tuple = sharding.DEFAULT_RULES


class Preemption:
  """SIGTERM/SIGINT set a flag; the loop saves at the next step and exits 0."""

  def __init__(self):
    self.event = threading.Event()

  def install(self) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, lambda *_: self.event.set())

  def requested(self) -> bool:
    flag = np.int32(self.event.is_set())
    if jax.process_count() > 1:  # every host stops at the same step
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flag = multihost_utils.process_allgather(flag).max()
    return bool(flag)


# ---------------------------------------------------------------------------
# Data


def _data_lib():
  import tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registrations)
  from polyglot.data import mixtures, pipeline  # pylint: disable=g-import-not-at-top
  return mixtures, pipeline


def host_data(tc: TrainConfig, split: str, seed: int):
  """This host's iterator of host batches for `split`."""
  _, pipeline = _data_lib()
  from polyglot.data.preprocessors import MlmConfig  # pylint: disable=g-import-not-at-top
  if tc.batch_size % jax.process_count():
    raise ConfigError(f"TrainConfig.batch_size={tc.batch_size} does not split over "
                      f"{jax.process_count()} processes: use a multiple of the process count")
  return pipeline.make_iterator(
      tc.mixture, length=tc.seq_len, batch_size=tc.batch_size // jax.process_count(),
      seed=seed, split=split, shuffle_buffer=tc.shuffle_buffer if split == "train" else 0,
      mlm=MlmConfig(mask_rate=tc.mask_rate, whole_word=tc.whole_word_masking))


def make_data(tc: TrainConfig, batch_sharding, seed: int):
  """This host's prefetching iterator of global training batches."""
  _, pipeline = _data_lib()
  return pipeline.DeviceIterator(host_data(tc, "train", seed), batch_sharding)


def vocabulary(tc: TrainConfig):
  mixtures, _ = _data_lib()
  return mixtures.get_provider(tc.mixture).output_features["targets"].vocabulary


def gather_data_states(state: bytes) -> list[str]:
  """Every process's input-pipeline state (base64), for the checkpoint."""
  if jax.process_count() == 1:
    return [base64.b64encode(state).decode()]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  lengths = multihost_utils.process_allgather(np.int64(len(state)))
  buf = np.zeros(int(lengths.max()), np.uint8)
  buf[:len(state)] = np.frombuffer(state, np.uint8)
  rows = multihost_utils.process_allgather(buf)
  return [base64.b64encode(r[:n].tobytes()).decode() for r, n in zip(rows, lengths)]


# ---------------------------------------------------------------------------
# Model, optimizer and state shardings


def make_setup(cfg: models.EncoderConfig, run: RunConfig, mesh) -> trainer.Setup:
  return trainer.make_setup(cfg, mesh, optim=run.optim, num_steps=run.train.num_steps,
                            seed=run.train.seed, rules=run.rules)


# What a run chooses when it starts from a checkpoint: how the model computes, not what it is.
INIT_RUN_FIELDS = ("dtype", "remat", "attention_impl", "dropout_rate", "attention_dropout_rate")


def init_config(run: RunConfig) -> models.EncoderConfig:
  """The model of `TrainConfig.init_from`: the checkpoint's architecture and vocabulary size
  with the run's INIT_RUN_FIELDS, so the run's model preset need not match the checkpoint."""
  path = run.train.init_from
  reader = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(path), read_only=True)
  step = reader.latest_step()
  if step is None:
    raise CheckpointError(f"TrainConfig.init_from={path!r} holds no checkpoint: pass a training "
                          "workdir or a directory written by tools/convert_from_hf.py")
  meta = reader.read_meta(step)
  kind = meta.get("model_kind", "masked_lm")
  if kind != "masked_lm":
    raise ConfigError(f"TrainConfig.init_from={path!r} holds a {kind} model: MLM pretraining "
                      "starts from a masked_lm checkpoint")
  saved = models.EncoderConfig.from_dict(meta["model_config"])
  log.info("model config from TrainConfig.init_from=%s (step %d)", path, step)
  return saved.replace(**{f: getattr(run.model, f) for f in INIT_RUN_FIELDS})


def fresh_state(setup: trainer.Setup, cfg: models.EncoderConfig, run: RunConfig, mesh, vocab):
  """Initialises parameters and optimizer state directly in their shards."""
  def init():
    model = models.MaskedLM(cfg, rngs=nnx.Rngs(run.train.seed))
    return trainer.init_state(nnx.to_pure_dict(nnx.split(model)[1]), setup.tx)
  with sharding.use_mesh(mesh, run.rules):
    state = jax.jit(init, out_shardings=setup.shardings)()
  if run.train.init_from:
    restored = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(run.train.init_from),
                                     read_only=True).restore(setup.abstract.params)
    if restored.vocab != vocab.model_bytes:
      raise ConfigError(f"TrainConfig.init_from={run.train.init_from!r} has another vocabulary "
                        f"than the mixture {run.train.mixture!r}: tokenize the data with the "
                        "checkpoint's SentencePiece model (e.g. text_directory_mixture."
                        "vocabulary = '<init_from>/sentencepiece.bpe.model')")
    params = restored.params
    with sharding.use_mesh(mesh, run.rules):
      state = jax.jit(lambda p: trainer.init_state(p, setup.tx),
                      out_shardings=setup.shardings)(params)
  return state


def restore_state(ck: ckpt_lib.Checkpointer, setup: trainer.Setup):
  """(state, data states, step) from the newest good checkpoint."""
  opt_target = {"step": setup.abstract.step, "opt_state": setup.abstract.opt_state}
  r = ck.restore(setup.abstract.params, opt_target)
  state = trainer.TrainState(r.opt_state["step"], r.params, r.opt_state["opt_state"])
  return state, (r.data or {}).get("states"), r.step


# ---------------------------------------------------------------------------
# The loop


def _host_metrics(metrics) -> dict[str, float]:
  values = jax.device_get(metrics)
  return {k: float(np.mean(v)) for k, v in values.items()}


def check_finite(step: int, metrics: dict[str, float], last_saved: int | None) -> None:
  if not math.isfinite(metrics["loss"]):
    kept = (f"the last good checkpoint (step {last_saved}) is intact"
            if last_saved is not None else "no checkpoint was written")
    raise PolyglotError(f"loss is {metrics['loss']} at step {step}; {kept}: lower "
                        "OptimConfig.learning_rate or raise warmup_steps and resume")


class Evaluator:
  """Mean MLM loss and accuracy over the first `eval_batches` held-out batches.

  The validation pipeline is built once (building it costs tens of
  milliseconds per language) and rewound to its start for every evaluation,
  so each evaluation sees the same batches.
  """

  def __init__(self, tc: TrainConfig, batch_sharding):
    self.tc, self.batch_sharding = tc, batch_sharding
    self.host = host_data(tc, "validation", tc.seed)
    self.start = self.host.get_state()

  def __call__(self, eval_fn, params) -> dict[str, float]:
    _, pipeline = _data_lib()
    self.host.set_state(self.start)
    it = pipeline.DeviceIterator(self.host, self.batch_sharding)
    totals: dict[str, float] = {}
    n = 0
    try:
      for _ in range(self.tc.eval_batches):
        try:
          batch = next(it)
        except StopIteration:
          break
        for k, v in _host_metrics(eval_fn(params, batch)).items():
          totals[k] = totals.get(k, 0.0) + v
        n += 1
    finally:
      it.close()
    return {k: v / n for k, v in totals.items()} if n else {}


def train(run: RunConfig, workdir: str, gin_config: str = "",
          preemption: Preemption | None = None) -> dict[str, float]:
  """Trains (or resumes) in `workdir`; returns the last logged metrics."""
  tc = run.train
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  writer = metric_writers.MetricWriter(workdir, enabled=primary)
  progress = metric_writers.Progress(tc.num_steps, enabled=primary)
  if primary and gin_config:
    pathlib.Path(workdir, "config.gin").write_text(gin_config, encoding="utf-8")
    writer.text("config", gin_config)

  mesh = sharding.make_mesh(run.mesh)
  vocab = vocabulary(tc)
  cfg = init_config(run) if tc.init_from else run.model.replace(vocab_size=vocab.vocab_size)
  if tc.seq_len > cfg.max_len:
    raise ConfigError(f"TrainConfig.seq_len={tc.seq_len} exceeds the model's max_len="
                      f"{cfg.max_len}: shorten the sequences or raise EncoderConfig.max_len")
  batch_shape = jax.ShapeDtypeStruct((tc.batch_size, tc.seq_len), jnp.int32)
  batch_sh = sharding.batch_shardings(batch_shape, mesh, run.rules)

  setup = make_setup(cfg, run, mesh)
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, ckpt_lib.SUBDIR), run.checkpoint)
  data = make_data(tc, batch_sh, tc.seed)
  if ck.latest_step() is not None:
    state, data_states, start = restore_state(ck, setup)
    if data_states and len(data_states) == jax.process_count():
      data.set_state(base64.b64decode(data_states[jax.process_index()]))
    else:
      log.warning("the checkpoint's input state is for %s processes, this run has %d: the "
                  "data stream restarts with seed %d", len(data_states or ()),
                  jax.process_count(), tc.seed + start)
      data.close()
      data = make_data(tc, batch_sh, tc.seed + start)
    log.info("resumed from step %d in %s", start, ck.directory)
  else:
    state, start = fresh_state(setup, cfg, run, mesh, vocab), 0

  meta = {"model_kind": "masked_lm", "model_config": cfg.to_dict(), "gin_config": gin_config}
  step_fn = jax.jit(trainer.bind_train_step(setup.graphdef, setup.tx, setup.schedule, run.loss),
                    in_shardings=(setup.shardings, batch_sh, None),
                    out_shardings=(setup.shardings, None), donate_argnums=(0,))
  eval_fn = jax.jit(lambda p, b: trainer.eval_step(p, b, graphdef=setup.graphdef,
                                                   loss_cfg=run.loss),
                    in_shardings=(setup.shardings.params, batch_sh))
  flops = trainer.flops_per_token(cfg, tc.seq_len)
  peak = trainer.peak_flops(jax.devices()[0])
  rng = jax.random.key(tc.seed)
  preemption = preemption or Preemption()
  last_saved = ck.latest_step()

  def save(step: int, metrics, force: bool = False) -> None:
    nonlocal last_saved
    if not (force or ck.should_save(step)):
      return
    check_finite(step, _host_metrics({"loss": metrics["loss"]}), last_saved)
    ck.save(step, params=state.params, opt_state={"step": state.step,
                                                  "opt_state": state.opt_state},
            vocab=vocab.model_bytes, meta=meta, data={"states": gather_data_states(
                data.get_state())})
    last_saved = step

  evaluator = Evaluator(tc, batch_sh) if tc.eval_every else None
  logged: dict[str, float] = {}
  step, window_start, t0 = start, start, time.perf_counter()
  try:
    with sharding.use_mesh(mesh, run.rules):
      progress.start(start)
      window, window_steps = None, 0  # metrics summed on device since the last log line
      while step < tc.num_steps:
        state, metrics = step_fn(state, next(data), rng)
        window = metrics if window is None else jax.tree.map(jnp.add, window, metrics)
        window_steps += 1
        step += 1
        if step == start + 1:  # the first step compiled: time from here
          jax.block_until_ready(metrics)
          window_start, t0 = step, time.perf_counter()
          progress.start(step)
        if step % tc.log_every == 0 or step == tc.num_steps:
          logged = {k: v / window_steps for k, v in _host_metrics(window).items()}
          window, window_steps = None, 0
          check_finite(step, logged, last_saved)
          tokens_per_s = mfu = None
          if step > window_start:  # none right after the compiling first step
            dt = time.perf_counter() - t0
            tokens_per_s = (step - window_start) * tc.batch_size * tc.seq_len / dt
            mfu = flops * tokens_per_s / (peak * jax.device_count()) if peak else None
            logged |= {"tokens_per_s": tokens_per_s} | ({"mfu": mfu} if mfu else {})
          writer.scalars(step, logged)
          progress.print(step, logged["loss"], tokens_per_s, mfu)
          window_start, t0 = step, time.perf_counter()
        if tc.eval_every and (step % tc.eval_every == 0 or step == tc.num_steps):
          writer.scalars(step, evaluator(eval_fn, state.params), prefix="eval")
          window_start, t0 = step, time.perf_counter()  # throughput counts training only
        if preemption.requested():
          save(step, metrics, force=True)
          log.warning("preempted: saved step %d in %s", step, ck.directory)
          break
        save(step, metrics, force=step == tc.num_steps)
  finally:
    ck.wait()
    ck.close()
    data.close()
    writer.close()
  return logged


# ---------------------------------------------------------------------------
# Entry point


def parse_flags(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m polyglot.train", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[],
                      help=f"gin file (repeatable), searched in the cwd and {GIN_DIR}")
  parser.add_argument("--workdir", default=None,
                      help="checkpoints and logs (default: workdir/<first gin file's name>)")
  parser.add_argument("--multihost", action="store_true",
                      help="call jax.distributed.initialize() (TPU pods, SLURM)")
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  args, rest = parser.parse_known_args(argv)
  bindings, unknown = [], []
  for arg in rest:
    if arg.startswith("--gin.") and "=" in arg:
      bindings.append(arg[len("--gin."):])
    else:
      unknown.append(arg)
  if unknown:
    parser.error(f"unrecognised arguments {unknown}; gin overrides are --gin.NAME=VALUE")
  args.gin_bindings = bindings
  args.gin_file = args.gin_file or [DEFAULT_GIN]
  return args


def parse_gin(files: list[str], bindings: list[str]) -> RunConfig:
  """Parses gin (unknown bindings are errors) and builds the RunConfig."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import configurables  # pylint: disable=g-import-not-at-top
  gin.add_config_file_search_path(str(GIN_DIR))
  for f in files:
    if not (os.path.exists(f) or (GIN_DIR / f).exists()):
      raise ConfigError(f"gin file {f!r} not found in {os.getcwd()} or {GIN_DIR}; "
                        "check the path (e.g. --gin_file=runs/demo.gin)")
  logging.disable(logging.ERROR)  # gin logs every search-path miss before it finds a file
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
  except (ValueError, KeyError, ImportError, IOError, SyntaxError) as e:
    raise ConfigError(f"gin: {str(e).splitlines()[0]}") from e
  finally:
    logging.disable(logging.NOTSET)
  return configurables.run_config()


def init_processes(args: argparse.Namespace) -> None:
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  elif args.multihost:
    jax.distributed.initialize()


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                      force=True)
  for noisy in ("absl", "jax._src", "orbax", "tensorflow"):  # Orbax logs through absl
    logging.getLogger(noisy).setLevel(logging.ERROR)
  args = parse_flags(sys.argv[1:] if argv is None else argv)
  try:
    run = parse_gin(args.gin_file, args.gin_bindings)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  import gin  # pylint: disable=g-import-not-at-top
  workdir = args.workdir or os.path.join("workdir", pathlib.Path(args.gin_file[0]).stem)
  preemption = Preemption()
  preemption.install()
  try:
    init_processes(args)
    metrics = train(run, workdir, gin.operative_config_str(), preemption)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except (PolyglotError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0 and metrics:
    print(f"done: {workdir} (loss {metrics['loss']:.4f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
