"""`python -m polyglot.train`: gin-configured pretraining (MLM; TLM and XLCo on pairs).

    python -m polyglot.train                                  # gin/runs/demo.gin
    python -m polyglot.train --gin_file=runs/pretrain_base.gin --workdir=/ckpt/base \
        --gin.NUM_STEPS=100000

Reads in a fixed order (big_vision's trainer): flags and gin, processes,
logging (`open_logs`), mesh, data, model and optimizer shapes, shardings and
the jitted steps (`build`), restore or init (`start_or_resume`), the loop
(`loop`: `log_train`, `Evaluator`, `save`). The same command runs on every
host of a pod (`--multihost`, see README); `TrainConfig.data_shards` makes
the global batches independent of the number of hosts.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import functools
import logging
import math
import os
import pathlib
import signal
import sys
import threading
import time
from typing import Any

from polyglot import _env

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyglot import checkpoint as ckpt_lib
from polyglot import api, lock, metric_writers, models, objectives, optimizer, paths, sharding
from polyglot import trainer
from polyglot.errors import CheckpointError, ConfigError, DataError, PolyglotError
from polyglot.data import schedules
from polyglot.eval import bitext as bitext_lib
from polyglot.eval import embed
from polyglot.eval import languages as languages_lib
from polyglot.eval.tokenizer import SentencePieceTokenizer

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
  # Input shards, each a stream of batch_size / data_shards rows of every global batch;
  # process p of P reads shards p*k .. p*k+k-1 (k = data_shards / P). None: one per
  # process. A fixed number makes the global batches, and the data state in a checkpoint,
  # independent of the process count (each shard is its own pipeline: keep k small).
  data_shards: int | None = None
  log_every: int = 10
  eval_every: int = 100               # 0 disables the held-out evaluation
  eval_batches: int = 4
  init_from: str | None = None        # a polyglot checkpoint whose parameters start the run
  # Sampling temperature, languages and masking rate by step (polyglot.data.schedules), for
  # MLM on text corpora and tokenized caches; None: the mixture's, fixed.
  schedule: schedules.MixtureSchedule | None = None

  def __post_init__(self):
    for name in ("num_steps", "batch_size", "seq_len", "log_every", "eval_batches"):
      if getattr(self, name) < 1:
        raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} is invalid: use >= 1")
    if self.eval_every < 0:
      raise ConfigError(f"TrainConfig.eval_every={self.eval_every} is invalid: use >= 0")
    if self.data_shards is not None and self.data_shards < 1:
      raise ConfigError(f"TrainConfig.data_shards={self.data_shards} is invalid: use >= 1, "
                        "or None for one shard per process")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a run is made of; gin builds it (see gin/runs/)."""
  model: models.EncoderConfig = models.preset("tiny")
  train: TrainConfig = TrainConfig()
  optim: optimizer.OptimConfig = optimizer.OptimConfig()
  loss: objectives.LossConfig = objectives.LossConfig()
  mesh: sharding.MeshConfig = sharding.MeshConfig()
  checkpoint: ckpt_lib.CheckpointConfig = ckpt_lib.CheckpointConfig()
  rules: tuple = sharding.DEFAULT_RULES
  # What the run optimises, each on its own data (polyglot.objectives): gin
  # `RunConfig.objectives = [@MLM(), @TLM(), @XLCo()]`.
  objectives: tuple = (objectives.MLM(),)
  languages: languages_lib.LanguageEvalConfig = languages_lib.LanguageEvalConfig()
  # Bitext retrieval at each held-out evaluation (polyglot.eval.bitext): gin
  # `RunConfig.bitext = @BitextConfig()`; off without a source, or with eval_every=0.
  bitext: bitext_lib.BitextConfig = bitext_lib.BitextConfig()

  def __post_init__(self):
    rate, schedule = self.loss.prediction_rate, self.train.schedule
    mask_rate = schedule.max_mask_rate(self.train.mask_rate) if schedule else self.train.mask_rate
    if rate is not None and rate < 1.5 * mask_rate:
      name = "MixtureSchedule.mask_rates" if mask_rate != self.train.mask_rate else (
          "TrainConfig.mask_rate")
      raise ConfigError(f"LossConfig.prediction_rate={rate} is too small for {name} up to "
                        f"{mask_rate}: predictions would be left out; use at least "
                        f"{1.5 * mask_rate:g} (2 x mask_rate is safe) or None")


# ---------------------------------------------------------------------------
# Processes


def any_host(flag: bool) -> bool:
  """`flag` or-ed over every process, so that all hosts take the same branch."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.process_allgather(np.int32(flag)).max())


def all_hosts(flag: bool) -> bool:
  """`flag` and-ed over every process."""
  return not any_host(not flag)


class Preemption:
  """SIGTERM/SIGINT set a flag; the loop saves at the next step and exits 0.

  With several processes the hosts agree (an all-gather, which waits for the
  step in flight) every `SYNC_EVERY` steps only, so that the loop does not
  block on the devices each step.
  """
  SYNC_EVERY = 10

  def __init__(self):
    self.event = threading.Event()

  @contextlib.contextmanager
  def installed(self):
    """SIGTERM and SIGINT set the flag inside the block (the previous handlers after it)."""
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: self.event.set()) for sig in signals}
    try:
      yield self
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)

  def requested(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.event.is_set()
    return step % self.SYNC_EVERY == 0 and any_host(self.event.is_set())  # same step everywhere


# ---------------------------------------------------------------------------
# Data


def _data_lib():
  import tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (registrations)
  from polyglot.data import mixtures, pipeline  # pylint: disable=g-import-not-at-top
  return mixtures, pipeline


def shard_range(data_shards: int, batch_size: int, process_index: int,
                process_count: int) -> range:
  """The data shards process `process_index` reads: k = data_shards / process_count
  consecutive ones, so that global rows come in shard order for any process count."""
  if data_shards % process_count:
    raise ConfigError(f"TrainConfig.data_shards={data_shards} does not split over "
                      f"{process_count} processes: use a multiple of the process count")
  if batch_size % data_shards:
    raise ConfigError(f"TrainConfig.batch_size={batch_size} does not split into "
                      f"{data_shards} data shards: use a multiple of {data_shards}")
  k = data_shards // process_count
  return range(process_index * k, (process_index + 1) * k)


def host_shards(tc: TrainConfig, batch_size: int) -> tuple[range, int]:
  """(this process's data shards, the number of data shards) of a `batch_size`-row stream."""
  num = tc.data_shards or jax.process_count()
  return shard_range(num, batch_size, jax.process_index(), jax.process_count()), num


def mlm_config(tc: TrainConfig):
  """The masking of the run's MLM rows, training and held-out."""
  from polyglot.data.preprocessors import MlmConfig  # pylint: disable=g-import-not-at-top
  return MlmConfig(mask_rate=tc.mask_rate, whole_word=tc.whole_word_masking)


def host_data(tc: TrainConfig, data: objectives.DataSpec, split: str, seed: int):
  """This host's iterator of one objective's host batches for `split`: its shards' batches,
  concatenated."""
  _, pipeline = _data_lib()
  shards, num = host_shards(tc, data.batch_size)
  return pipeline.make_sharded_iterator(
      data.mixture, shards=shards, num_shards=num, length=data.seq_len,
      batch_size=data.batch_size // num, seed=seed, split=split,
      shuffle_buffer=tc.shuffle_buffer if split == "train" else 0,
      mlm=mlm_config(tc),
      features=data.features,
      schedule=tc.schedule if split == "train" and data.features == "mlm" else None)


def make_data(tc: TrainConfig, objs, batch_sharding, seed: int):
  """This host's prefetching iterator of global training batches, `{objective: batch}`."""
  _, pipeline = _data_lib()
  return pipeline.DeviceIterator(
      pipeline.ObjectiveIterator({o.name: host_data(tc, o.data, "train", seed) for o in objs}),
      batch_sharding)


def vocabulary(mixture: str):
  """The vocabulary of a registered mixture's tasks (monolingual or parallel)."""
  mixtures, _ = _data_lib()
  return next(iter(mixtures.get_provider(mixture).output_features.values())).vocabulary


def check_vocabularies(objs, vocab) -> None:
  """Every objective's mixture must be tokenized with the run's vocabulary."""
  for o in objs:
    if vocabulary(o.data.mixture) != vocab:
      raise ConfigError(f"{o.name.upper()}.mixture={o.data.mixture!r} is tokenized with another "
                        "vocabulary than TrainConfig.mixture: register both with the same "
                        "vocabulary")


def gather_data_states(state: bytes) -> dict[str, list[str]]:
  """Every objective's data shards' input-pipeline states (base64, in shard order), for the
  checkpoint; `state` is this process's (an `ObjectiveIterator` state)."""
  _, pipeline = _data_lib()
  return {name: _gather_shard_states(s)
          for name, s in pipeline.split_objective_states(state).items()}


def _gather_shard_states(state: bytes) -> list[str]:
  """Every data shard's state of one objective; `state` is this process's shards'."""
  _, pipeline = _data_lib()
  if jax.process_count() == 1:
    rows = [state]
  else:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    lengths = multihost_utils.process_allgather(np.int64(len(state)))
    buf = np.zeros(int(lengths.max()), np.uint8)
    buf[:len(state)] = np.frombuffer(state, np.uint8)
    gathered = multihost_utils.process_allgather(buf)
    rows = [r[:n].tobytes() for r, n in zip(gathered, lengths)]
  return [base64.b64encode(s).decode() for row in rows for s in pipeline.split_states(row)]


def restore_data(data, states: dict[str, list[str]] | list[str] | None, tc: TrainConfig, objs,
                 batch_sharding, start: int):
  """`data` moved to this host's shards in `states` (from `gather_data_states`; a list is
  MLM's, as checkpoints held before there were other objectives), or, when the checkpoint
  has another number of data shards or other objectives, a fresh stream seeded by the step."""
  _, pipeline = _data_lib()
  states = {"mlm": states} if isinstance(states, list) else (states or {})
  num = tc.data_shards or jax.process_count()
  if sorted(states) == sorted(o.name for o in objs) and all(len(s) == num
                                                            for s in states.values()):
    try:
      data.set_state(pipeline.join_objective_states({
          o.name: pipeline.join_states([base64.b64decode(states[o.name][i])
                                        for i in host_shards(tc, o.data.batch_size)[0]])
          for o in objs}))
      return data
    except DataError as e:
      log.warning("%s: the data stream restarts with seed %d", e, tc.seed + start)
  else:
    log.warning("the checkpoint's input state is for %s with %s data shards, this run has %s "
                "with %d: the data stream restarts with seed %d", sorted(states),
                sorted({len(s) for s in states.values()}), sorted(o.name for o in objs), num,
                tc.seed + start)
  data.close()
  return make_data(tc, objs, batch_sharding, tc.seed + start)


# ---------------------------------------------------------------------------
# Model, optimizer and state shardings


def make_setup(cfg: models.EncoderConfig, run: RunConfig, mesh, objs=()) -> trainer.Setup:
  return trainer.make_setup(cfg, mesh, optim=run.optim, num_steps=run.train.num_steps,
                            seed=run.train.seed, rules=run.rules, objectives=objs)


def build_objectives(run: RunConfig, cfg: models.EncoderConfig):
  """The run's objectives (`RunConfig.objectives`), their data defaulting to TrainConfig's."""
  tc = run.train
  defaults = objectives.DataSpec(tc.mixture, "mlm", tc.batch_size, tc.seq_len)
  return objectives.build(tuple(run.objectives), defaults, run.loss, cfg)


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
  meta = api.model_meta(reader, step)
  kind = meta.get("model_kind", "masked_lm")
  if kind != "masked_lm":
    raise ConfigError(f"TrainConfig.init_from={path!r} holds a {kind} model: MLM pretraining "
                      "starts from a masked_lm checkpoint")
  saved = models.EncoderConfig.from_dict(meta["model_config"])
  log.info("model config from TrainConfig.init_from=%s (step %d)", path, step)
  return saved.replace(**{f: getattr(run.model, f) for f in INIT_RUN_FIELDS})


def model_config(run: RunConfig, vocab) -> models.EncoderConfig:
  """The model this run trains: the run's preset sized to the vocabulary, or init_from's."""
  tc = run.train
  cfg = init_config(run) if tc.init_from else run.model.replace(vocab_size=vocab.vocab_size)
  if tc.seq_len > cfg.max_len:
    raise ConfigError(f"TrainConfig.seq_len={tc.seq_len} exceeds the model's max_len="
                      f"{cfg.max_len}: shorten the sequences or raise EncoderConfig.max_len")
  return cfg


def fresh_state(setup: trainer.Setup, cfg: models.EncoderConfig, run: RunConfig, mesh, vocab,
                objs=()):
  """Initialises parameters, optimizer and objective state directly in their shards."""
  def init():
    model = trainer.pretraining_model(cfg, objs, run.train.seed)
    return trainer.init_state(nnx.to_pure_dict(nnx.split(model)[1]), setup.tx, objs)
  with sharding.use_mesh(mesh, run.rules):
    state = jax.jit(init, out_shardings=setup.shardings)()
  if run.train.init_from:
    reader = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(run.train.init_from), read_only=True)
    wanted = setup.abstract.params
    if "generator" in wanted and "generator_config" not in reader.read_meta(
        reader.resolve_step()):  # an MLM checkpoint starts the RTD run's discriminator
      wanted = {k: wanted[k] for k in ("encoder", "lm_head")}
    restored = reader.restore(wanted)
    if restored.vocab != vocab.model_bytes:
      raise ConfigError(f"TrainConfig.init_from={run.train.init_from!r} has another vocabulary "
                        f"than the mixture {run.train.mixture!r}: tokenize the data with the "
                        "checkpoint's SentencePiece model (e.g. text_directory_mixture."
                        "vocabulary = '<init_from>/sentencepiece.bpe.model')")
    params = dict(state.params, **restored.params)  # the generator stays fresh if not restored
    with sharding.use_mesh(mesh, run.rules):
      state = jax.jit(lambda p: trainer.init_state(p, setup.tx, objs),
                      out_shardings=setup.shardings)(params)
  return state


def restore_state(ck: ckpt_lib.Checkpointer, setup: trainer.Setup, vocab):
  """(state, data states, step) from the newest good checkpoint, which must hold this run's
  model and vocabulary."""
  r = ck.restore(setup.abstract.params, opt_item(setup.abstract))
  if r.vocab != vocab.model_bytes:
    raise ConfigError(f"checkpoint step {r.step} in {ck.directory} was trained with another "
                      "vocabulary than this run's mixture: run with the configuration that "
                      "wrote it (its config.gin), or pass another workdir")
  state = trainer.TrainState(r.opt_state["step"], r.params, r.opt_state["opt_state"],
                             r.opt_state.get("objectives", {}))
  return state, (r.data or {}).get("states"), r.step


def opt_item(state: trainer.TrainState) -> dict[str, Any]:
  """The checkpoint's `opt_state` item: the step, the optimizer state, and the objectives'
  state (XLCo's momentum encoder and queue) when any objective keeps one."""
  item = {"step": state.step, "opt_state": state.opt_state}
  return item | ({"objectives": state.objectives} if state.objectives else {})


# ---------------------------------------------------------------------------
# Set-up: what the loop needs, built once


@dataclasses.dataclass
class Job:
  """A run's parts, built in the fixed order of `build`; `ck` is opened once the run holds
  its workdir (`hold_workdir`)."""
  run: RunConfig
  mesh: Any
  vocab: Any
  cfg: models.EncoderConfig
  batch_sharding: Any
  setup: trainer.Setup
  meta: dict[str, Any]
  objectives: tuple
  step_fn: Any
  eval_fns: dict[str, Any]          # jitted held-out metrics, by objective that has them
  tokens_per_step: int
  flops_per_token: float
  peak_flops: float | None
  bitext: "BitextEvaluator | None" = None
  ck: ckpt_lib.Checkpointer | None = None


def compile_steps(setup: trainer.Setup, batch_sharding, objs):
  """(train step, {objective: eval step}), jitted with the state and batch shardings."""
  step_fn = jax.jit(trainer.bind_train_step(setup.graphdef, setup.tx, setup.schedule, objs),
                    in_shardings=(setup.shardings, batch_sharding, None),
                    out_shardings=(setup.shardings, None), donate_argnums=(0,))
  eval_fns = {o.name: jax.jit(lambda p, b, o=o: trainer.eval_step(p, b, graphdef=setup.graphdef,
                                                                  objective=o),
                              in_shardings=(setup.shardings.params, batch_sharding))
              for o in objs if isinstance(o, (objectives.MaskedLanguageModel,
                                              objectives.ReplacedTokenDetection))}
  return step_fn, eval_fns


def build(run: RunConfig, gin_config: str) -> Job:
  """Mesh, vocabulary, model config, shardings, state shapes, steps: everything a bad
  configuration can fail on, before anything is written."""
  tc = run.train
  mesh = sharding.make_mesh(run.mesh)
  vocab = vocabulary(tc.mixture)
  cfg = model_config(run, vocab)
  objs = build_objectives(run, cfg)
  check_vocabularies(objs, vocab)
  for o in objs:  # a batch that does not split into the data shards or the mesh fails here;
    host_shards(tc, o.data.batch_size)  # every objective's batch gets one sharding: rows
                                        # over the data axes
    if o.data.seq_len > cfg.max_len:
      raise ConfigError(f"{o.name.upper()}.seq_len={o.data.seq_len} exceeds the model's "
                        f"max_len={cfg.max_len}: shorten the sequences")
    batch_sh = sharding.batch_shardings(
        jax.ShapeDtypeStruct((o.data.batch_size, o.data.seq_len), jnp.int32), mesh, run.rules)
  setup = make_setup(cfg, run, mesh, objs)
  meta = {"model_kind": "masked_lm", "model_config": cfg.to_dict(), "gin_config": gin_config,
          "objectives": [o.describe() for o in objs]}
  if (generator := objectives.generator_of(objs)) is not None:
    meta["generator_config"] = generator.to_dict()
  step_fn, eval_fns = compile_steps(setup, batch_sh, objs)
  tokens = sum(o.data.batch_size * o.data.seq_len for o in objs)
  flops = sum(trainer.objective_flops(cfg, o) for o in objs)
  bitext = (BitextEvaluator(run.bitext, cfg, vocab, mesh)
            if run.bitext.enabled and tc.eval_every else None)
  return Job(run, mesh, vocab, cfg, batch_sh, setup, meta, objs, step_fn, eval_fns, tokens,
             flops / tokens, trainer.peak_flops(jax.devices()[0]), bitext)


def start_or_resume(job: Job):
  """(state, data iterator, step): from the newest good checkpoint, else fresh."""
  tc = job.run.train
  data = make_data(tc, job.objectives, job.batch_sharding, tc.seed)
  if job.ck.latest_step() is None:
    return (fresh_state(job.setup, job.cfg, job.run, job.mesh, job.vocab, job.objectives),
            data, 0)
  state, data_states, start = restore_state(job.ck, job.setup, job.vocab)
  data = restore_data(data, data_states, tc, job.objectives, job.batch_sharding, start)
  log.info("resumed from step %d in %s", start, job.ck.directory)
  return state, data, start


# ---------------------------------------------------------------------------
# Logging


def _host_metrics(metrics) -> dict[str, float]:
  values = jax.device_get(metrics)
  return {k: float(np.mean(v)) for k, v in values.items()}


def check_finite(step: int, metrics: dict[str, float], last_saved: int | None) -> None:
  if not math.isfinite(metrics["loss"]):
    kept = (f"the last good checkpoint (step {last_saved}) is intact"
            if last_saved is not None else "no checkpoint was written")
    raise PolyglotError(f"loss is {metrics['loss']} at step {step}; {kept}: lower "
                        "OptimConfig.learning_rate or raise warmup_steps and resume")


class Window:
  """Training metrics summed on device since the last log line, and the throughput clock
  (restarted after compiling and evaluating, so tokens/s counts training steps only)."""

  def __init__(self, step: int):
    self.sums, self.steps = None, 0
    self.restart(step)

  def restart(self, step: int) -> None:
    self.start, self.t0 = step, time.perf_counter()

  def add(self, metrics) -> None:
    self.sums = metrics if self.sums is None else jax.tree.map(jnp.add, self.sums, metrics)
    self.steps += 1

  def take(self) -> dict[str, float]:
    """The window's mean metrics (one device-to-host copy); starts a new window."""
    means = {k: v / self.steps for k, v in _host_metrics(self.sums).items()}
    self.sums, self.steps = None, 0
    return means

  def tokens_per_s(self, step: int, tokens_per_step: int) -> float | None:
    if step <= self.start:  # none right after the compiling first step
      return None
    return (step - self.start) * tokens_per_step / (time.perf_counter() - self.t0)


@dataclasses.dataclass
class Logs:
  """Where a run reports: metrics.jsonl and TensorBoard, and the console line."""
  writer: metric_writers.MetricWriter
  progress: metric_writers.Progress
  workdir: str


def open_logs(workdir: str, gin_config: str, run: RunConfig, start: int) -> Logs:
  """The writers (process 0 writes, others get no-ops) and config.gin in the workdir, once
  the run has started at step `start`: metrics.jsonl keeps the rows up to `start`."""
  primary = jax.process_index() == 0
  writer = metric_writers.MetricWriter(workdir, enabled=primary, resume_step=start)
  if primary and gin_config:
    paths.write_text(paths.join(workdir, "config.gin"), gin_config)
    writer.text("config", gin_config)
  progress = metric_writers.Progress(run.train.num_steps, enabled=primary)
  return Logs(writer, progress, workdir)


def log_train(logs: Logs, job: Job, window: Window, step: int,
              last_saved: int | None) -> dict[str, float]:
  """Writes the window's metrics, tokens/s and MFU; stops on a non-finite loss."""
  logged = window.take()
  check_finite(step, logged, last_saved)
  tokens_per_s = window.tokens_per_s(step, job.tokens_per_step)
  mfu = None
  if tokens_per_s is not None:
    if job.peak_flops:
      mfu = job.flops_per_token * tokens_per_s / (job.peak_flops * jax.device_count())
    logged |= {"tokens_per_s": tokens_per_s} | ({"mfu": mfu} if mfu else {})
  logs.writer.scalars(step, logged)
  logs.progress.print(step, logged["loss"], tokens_per_s, mfu)
  window.restart(step)
  return logged


# ---------------------------------------------------------------------------
# Evaluation


class Evaluator:
  """An objective's mean held-out metrics (MLM's, TLM's loss and accuracy) over the first
  `eval_batches` held-out batches of its mixture.

  MLM on text corpora or tokenized caches: the batches are made once, in numpy
  (`pipeline.heldout_batches`), and kept. Anything else: the validation pipeline
  (tf.data) is built once and rewound to its start for every evaluation. Either way each
  evaluation sees the same batches. Every host runs the same number of batches: the
  evaluation stops, on all hosts, at the first host whose validation shards end (one
  allgather per batch), since a host that stopped early would leave the others waiting in
  the step's collectives.
  """

  def __init__(self, tc: TrainConfig, data: objectives.DataSpec, batch_sharding):
    self.tc, self.batch_sharding = tc, batch_sharding
    self.batches = None
    if data.features == "mlm":
      _, pipeline = _data_lib()
      shards, num = host_shards(tc, data.batch_size)
      self.batches = pipeline.heldout_batches(
          data.mixture, shards=shards, num_shards=num, length=data.seq_len,
          batch_size=data.batch_size // num, count=tc.eval_batches, seed=tc.seed,
          mlm=mlm_config(tc))
    if self.batches is None:
      self.host = host_data(tc, data, "validation", tc.seed)
      self.start = self.host.get_state()

  def _host_batches(self):
    """This host's held-out batches, from their start."""
    if self.batches is not None:
      return iter(self.batches)
    self.host.set_state(self.start)
    return self.host

  def __call__(self, eval_fn, params) -> dict[str, float]:
    _, pipeline = _data_lib()
    it = pipeline.DeviceIterator(self._host_batches(), self.batch_sharding)
    totals: dict[str, float] = {}
    n = 0
    try:
      for _ in range(self.tc.eval_batches):
        batch = next(it, None)
        if not all_hosts(batch is not None):
          break
        for k, v in _host_metrics(eval_fn(params, batch)).items():
          totals[k] = totals.get(k, 0.0) + v
        n += 1
    finally:
      it.close()
    if not n:
      log.warning("the held-out evaluation found no batch on some host (its validation "
                  "shards are empty): use fewer data shards or more validation text")
    return {k: v / n for k, v in totals.items()} if n else {}


class LanguageEvaluator:
  """MLM loss and accuracy per language on held-out rows (`polyglot.data.heldout`,
  `polyglot.eval.languages`): `rows_per_language` rows of every language per data shard.

  Each data shard's rows are made once, from its block of the validation lines. Hosts run
  the same number of batches (the most any data shard needs, agreed by an allgather),
  padded with rows that hold no token; the jitted step sums each language's loss, correct
  predictions and tokens over the global batch, so the totals are global on every host.
  """

  def __init__(self, job: "Job", data: objectives.DataSpec, cfg: languages_lib.LanguageEvalConfig,
               tasks: list, sizes: list[float]):
    from polyglot.data import heldout, tokenized  # pylint: disable=g-import-not-at-top
    import seqio  # pylint: disable=g-import-not-at-top
    tc = job.run.train
    self.cfg, self.sizes = cfg, sizes
    rows_sharding = jax.sharding.NamedSharding(job.batch_sharding.mesh,
                                               jax.sharding.PartitionSpec(job.batch_sharding.spec[0]))
    self.shardings = {k: rows_sharding if k == "languages" else job.batch_sharding
                      for k in heldout.FIELDS}
    self.names = [language_key(data.mixture, t.name) for t in tasks]
    vocabulary = tasks[0].output_features["targets"].vocabulary
    shards, num = host_shards(tc, data.batch_size)
    pipeline = _data_lib()[1]
    rows = [heldout.language_rows(
        tokenized.load_corpus(tasks, "validation", seqio.ShardInfo(s, num)),
        length=data.seq_len, rows_per_language=cfg.rows_per_language,
        seed=pipeline.shard_seed(tc.seed, s),
        mlm=mlm_config(tc),
        mask_id=vocabulary.mask_id, word_start=vocabulary.word_start) for s in shards]
    rows_per_shard = data.batch_size // num
    count = max(heldout.num_batches(r, rows_per_shard) for r in rows)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      count = int(multihost_utils.process_allgather(np.int32(count)).max())
    parts = [heldout.batches(r, rows_per_shard, count) for r in rows]
    self.batches = [{k: np.concatenate([p[i][k] for p in parts]) for k in heldout.FIELDS}
                    for i in range(count)]
    self.fn = jax.jit(functools.partial(
        objectives.mlm.language_sums, graphdef=job.setup.graphdef,
        loss_cfg=job.run.loss, num_languages=len(tasks)),
        in_shardings=(job.setup.shardings.params, self.shardings))

  @classmethod
  def make(cls, job: "Job", cfg: languages_lib.LanguageEvalConfig) -> "LanguageEvaluator | None":
    """The evaluator of the run's MLM objective; None when it is disabled or the mixture is
    no text corpus or tokenized cache with a validation split."""
    mlm = next((o for o in job.objectives if o.name == "mlm"), None)
    if not cfg.rows_per_language or not job.run.train.eval_every or mlm is None:
      return None
    mixtures, _ = _data_lib()
    from polyglot.data import tokenized  # pylint: disable=g-import-not-at-top
    provider = mixtures.get_provider(mlm.data.mixture)
    tasks = [t for t in getattr(provider, "tasks", [provider]) if "validation" in t.splits]
    if not tasks or not all(map(tokenized.streamable, tasks)):
      log.info("no per-language evaluation: %s is no text corpus or tokenized cache with a "
               "validation split", mlm.data.mixture)
      return None
    try:
      by_key, _ = mixtures.corpus_settings(mlm.data.mixture)
      sizes = [float(by_key[language_key(mlm.data.mixture, t.name)]) for t in tasks]
    except (DataError, KeyError):
      sizes = [float(t.source.num_input_examples("train")) for t in tasks]
    evaluator = cls(job, mlm.data, cfg, tasks, sizes)
    if not evaluator.batches:
      log.info("no per-language evaluation: no language of %s has held-out text",
               mlm.data.mixture)
      return None
    return evaluator

  def __call__(self, params) -> dict[str, Any]:
    """The table (`languages_lib.table`) of `params` on the held-out rows."""
    totals = None
    for batch in self.batches:
      sums = self.fn(params, {k: jax.make_array_from_process_local_data(self.shardings[k], v)
                              for k, v in batch.items()})
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return languages_lib.table(self.names, self.sizes, jax.device_get(totals), self.cfg)


class BitextEvaluator:
  """Bitext retrieval of the run's encoder (`polyglot.eval.bitext`): accuracy@1 both ways
  and mining F1 per pair. The sentences are read and the retrieval settings fitted to the
  model once, when the run is built, so a bad bitext fails before anything is written.
  Every host embeds every sentence (batches split over the mesh's data axes) and scores
  the same pairs."""

  def __init__(self, cfg: bitext_lib.BitextConfig, model_cfg: models.EncoderConfig, vocab,
               mesh):
    self.bitexts = bitext_lib.read_bitexts(cfg)
    self.hp = bitext_lib.fitted_hparams(cfg, model_cfg.num_layers, model_cfg.max_len)
    self.settings = bitext_lib.describe(cfg, self.hp, model_cfg.num_layers)
    self.tok = SentencePieceTokenizer(vocab.model_bytes, "the run's vocabulary")
    self.mesh = mesh

  def __call__(self, graphdef, params) -> list[dict[str, Any]]:
    """Per pair, `bitext_lib.score` of the encoder of the model (`graphdef`, `params`)."""
    encoder = nnx.merge(graphdef, params).encoder
    embedder = embed.Embedder(encoder, self.tok, self.mesh, show_progress=False)
    return bitext_lib.score(self.bitexts, bitext_lib.embed_all(
        self.bitexts, lambda texts, lang: embedder(texts, self.hp, lang)))


def language_key(mixture: str, task_name: str) -> str:
  """A mixture's task name without the mixture's prefix: its language id."""
  return task_name[len(mixture) + 1:] if task_name.startswith(mixture + ".") else task_name


def has_validation(mixture: str) -> bool:
  mixtures, _ = _data_lib()
  return "validation" in mixtures.get_provider(mixture).splits


def eval_due(tc: TrainConfig, step: int) -> bool:
  return bool(tc.eval_every) and (step % tc.eval_every == 0 or step == tc.num_steps)


# ---------------------------------------------------------------------------
# Checkpoints


def save(job: Job, step: int, state, data, metrics, last_saved: int | None) -> int:
  """Saves `step` (params, optimizer, every data shard's state); returns `step`.

  The step's loss must be finite: a diverged state never replaces a good checkpoint.
  """
  check_finite(step, _host_metrics({"loss": metrics["loss"]}), last_saved)
  job.ck.save(step, params=state.params, opt_state=opt_item(state),
              vocab=job.vocab.model_bytes, meta=job.meta,
              data={"states": gather_data_states(data.get_state())})
  return step


# ---------------------------------------------------------------------------
# The loop


def loop(job: Job, state, data, start: int, logs: Logs,
         preemption: Preemption) -> dict[str, float]:
  """Steps from `start` to `num_steps` (or a preemption); returns the last logged metrics."""
  tc = job.run.train
  evaluators = {o.name: Evaluator(tc, o.data, job.batch_sharding) for o in job.objectives
                if o.name in job.eval_fns and has_validation(o.data.mixture)
                } if tc.eval_every else {}
  by_language = LanguageEvaluator.make(job, job.run.languages)
  language_table = None
  rng = jax.random.key(tc.seed)
  last_saved = job.ck.latest_step()
  logged: dict[str, float] = {}
  window, step = Window(start), start
  logs.progress.start(start)
  while step < tc.num_steps:
    state, metrics = job.step_fn(state, next(data), rng)
    window.add(metrics)
    step += 1
    if step == start + 1:  # the first step compiled: time from here
      jax.block_until_ready(metrics)
      window.restart(step)
      logs.progress.start(step)
    if step % tc.log_every == 0 or step == tc.num_steps:
      logged = log_train(logs, job, window, step, last_saved)
    if eval_due(tc, step) and (evaluators or job.bitext is not None):
      held_out = {}
      for name, evaluator in evaluators.items():
        held_out |= evaluator(job.eval_fns[name], state.params)
      if held_out:
        logs.writer.scalars(step, held_out, prefix="eval")
      if by_language is not None:
        start_s = time.perf_counter()
        language_table = by_language(state.params)
        write_language_table(logs, step, language_table, time.perf_counter() - start_s)
      if job.bitext is not None:
        start_s = time.perf_counter()
        pairs = job.bitext(job.setup.graphdef, state.params)
        write_bitext(logs, step, job.bitext.settings, pairs, time.perf_counter() - start_s)
      window.restart(step)
    if preemption.requested(step):
      last_saved = save(job, step, state, data, metrics, last_saved)
      log.warning("preempted: saved step %d in %s", step, job.ck.directory)
      break
    if job.ck.should_save(step) or step == tc.num_steps:
      last_saved = save(job, step, state, data, metrics, last_saved)
      logs.writer.flush()  # the metrics of every saved step are in the workdir too
  if language_table is not None and step == tc.num_steps:
    plot_language_table(logs, language_table)
  return logged


def write_language_table(logs: Logs, step: int, tab: dict[str, Any], seconds: float) -> None:
  """The per-language rows of metrics.jsonl and TensorBoard (with the evaluation's
  seconds), and languages.json."""
  logs.writer.scalars(step, languages_lib.scalars(tab) | {"seconds": seconds},
                      prefix="eval_languages")
  if jax.process_index() == 0:
    try:
      languages_lib.write_table(logs.workdir, step, tab)
    except OSError as e:
      raise metric_writers.unwritable(paths.join(logs.workdir, languages_lib.TABLE_FILE),
                                      e) from e


def write_bitext(logs: Logs, step: int, settings: dict[str, Any],
                 pairs: list[dict[str, Any]], seconds: float) -> None:
  """The `eval_bitext` rows of metrics.jsonl and TensorBoard (with the evaluation's
  seconds), bitext.json (the report of `python -m polyglot.eval.bitext --output`, at
  `step`) and the summary on the console."""
  logs.writer.scalars(step, bitext_lib.scalars(pairs) | {"seconds": seconds},
                      prefix="eval_bitext")
  if jax.process_index() != 0:
    return
  path = paths.join(logs.workdir, bitext_lib.REPORT_FILE)
  try:
    paths.write_text(path, bitext_lib.report_json({"step": step, **settings}, pairs))
  except OSError as e:
    raise metric_writers.unwritable(path, e) from e
  print(f"step {step} {bitext_lib.summary(pairs)}", file=logs.progress.stream, flush=True)


def plot_language_table(logs: Logs, tab: dict[str, Any]) -> None:
  """The end of a run: the per-language summary on the console and languages.png."""
  if jax.process_index() != 0:
    return
  path = paths.join(logs.workdir, languages_lib.PLOT_FILE)
  try:
    languages_lib.plot(path, tab)
  except OSError as e:
    raise metric_writers.unwritable(path, e) from e
  print(f"{languages_lib.summary(tab)}\n  plot: {path}", file=logs.progress.stream, flush=True)


@contextlib.contextmanager
def hold_workdir(workdir: str):
  """The workdir lock for the block (`polyglot.lock`), taken by process 0 for all hosts."""
  held, failure = lock.WorkdirLock(workdir, primary=jax.process_index() == 0), None
  try:
    held.__enter__()
  except PolyglotError as e:
    failure = e
  if any_host(failure is not None):
    raise failure or PolyglotError(f"workdir {workdir} is in use: see process 0's error")
  try:
    yield
  finally:
    held.__exit__(None, None, None)


def train(run: RunConfig, workdir: str, gin_config: str = "",
          preemption: Preemption | None = None) -> dict[str, float]:
  """Trains (or resumes) in `workdir` (a local path or a URL); returns the last logged
  metrics.

  Nothing is written before the whole configuration is checked (`build`) and
  the workdir lock is held; config.gin and metrics.jsonl are written once the
  run has started from a checkpoint or afresh.
  """
  log.info(sharding.describe_devices())
  sharding.check_platform(run.mesh)
  workdir = paths.resolve(workdir)
  job = build(run, gin_config)
  with hold_workdir(workdir):
    job.ck = ckpt_lib.Checkpointer(paths.join(workdir, ckpt_lib.SUBDIR), run.checkpoint)
    logs, data = None, None
    try:
      state, data, start = start_or_resume(job)
      logs = open_logs(workdir, gin_config, run, start)
      with sharding.use_mesh(job.mesh, run.rules):
        return loop(job, state, data, start, logs, preemption or Preemption())
    finally:
      try:
        job.ck.wait()  # a failed asynchronous save raises here when nothing else did
      finally:
        job.ck.close()
        if data is not None:
          data.close()
        if logs is not None:
          logs.writer.close()


# ---------------------------------------------------------------------------
# Entry point


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one `error:` line, exit 2 (not argparse's usage block)
    raise ConfigError(f"{message}; see --help")


def parse_flags(argv: list[str]) -> argparse.Namespace:
  parser = _Parser(prog="python -m polyglot.train", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", "--gin-file", action="append", default=[],
                      help=f"gin file (repeatable), searched in the cwd and {GIN_DIR}")
  parser.add_argument("--workdir", type=paths.resolve, default=None,
                      help="checkpoints and logs, a local path or a URL such as gs://bucket/run "
                      "(default: workdir/<first gin file's name>)")
  parser.add_argument("--multihost", action="store_true",
                      help="call jax.distributed.initialize() (TPU pods, SLURM)")
  parser.add_argument("--coordinator_address", "--coordinator-address", default=None)
  parser.add_argument("--num_processes", "--num-processes", type=int, default=None)
  parser.add_argument("--process_id", "--process-id", type=int, default=None)
  args, rest = parser.parse_known_args(argv)
  bindings, unknown = [], []
  for arg in rest:
    if arg.startswith("--gin.") and "=" in arg:
      bindings.append(arg[len("--gin."):])
    else:
      unknown.append(arg)
  if unknown:
    raise ConfigError(f"unrecognised arguments {unknown}; gin overrides are --gin.NAME=VALUE")
  args.gin_bindings = bindings
  args.gin_file = args.gin_file or [DEFAULT_GIN]
  return args


def parse_gin(files: list[str], bindings: list[str]) -> RunConfig:
  """Parses gin (unknown bindings are errors) and builds the RunConfig."""
  import gin  # pylint: disable=g-import-not-at-top
  from polyglot import configurables  # pylint: disable=g-import-not-at-top
  gin.clear_config()
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
  run = configurables.run_config()
  configurables.check_macros(bindings)
  return run


def init_processes(args: argparse.Namespace) -> None:
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  elif args.multihost:
    jax.distributed.initialize()


def main(argv: list[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                      force=True)
  _env.quiet_libraries()
  preemption = Preemption()
  try:
    args = parse_flags(sys.argv[1:] if argv is None else argv)
    run = parse_gin(args.gin_file, args.gin_bindings)
    import gin  # pylint: disable=g-import-not-at-top
    workdir = args.workdir or paths.resolve(f"workdir/{pathlib.Path(args.gin_file[0]).stem}")
    init_processes(args)
    with preemption.installed():
      metrics = train(run, workdir, gin.operative_config_str(), preemption)
  except PolyglotError as e:  # gin appends "In call to configurable ..." lines: keep the first
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2 if isinstance(e, ConfigError) else 1
  if jax.process_index() == 0 and preemption.event.is_set():
    print(f"stopped: {workdir} (preempted; the same command resumes it)")
  elif jax.process_index() == 0 and metrics:
    print(f"done: {workdir} (loss {metrics['loss']:.4f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
