"""The input pipeline a trainer calls: host batches, their state, global arrays.

    it = make_iterator("embedded", length=512, batch_size=8, seed=0)
    batch = next(it)            # dict of int32 numpy [batch_size, length]
    state = it.get_state()      # bytes, for the checkpoint
    it2 = make_iterator("embedded", length=512, batch_size=8, seed=0)
    it2.set_state(state)        # continues exactly where `it` was
    dev = DeviceIterator(it2, sharding)   # global jax.Arrays, prefetched
    both = make_sharded_iterator("embedded", shards=[2, 3], num_shards=4, length=512,
                                 batch_size=8)   # shards 2 and 3: 16 rows

Per data shard (by default one per JAX process): the seqio mixture, read
from shard `ShardInfo(index, num_shards)` (each language's lines are dealt to
shards in turn: `sources.dealt`; a training split with fewer lines than
shards is read whole by each) -> language
sampling at the mixture's rates -> a shuffle buffer of chunks ->
`MlmFeatureConverter` (`<s> chunk </s>`, packing) -> batches of
`batch_size` rows -> masking of the whole batch (`masking.mask_batch`, keyed by
the shard's seed and the batch's index). Fields: `input_ids, targets, loss_weights, segment_ids,
positions`, int32 [batch_size, length]. That is the "mlm" layout; a parallel
mixture (translation pairs) is read as "tlm" rows (`preprocessors.tlm_rows`:
the same fields, a pair per segment) or as "pairs" (`preprocessors.pair_rows`:
`query_ids, key_ids`), as the objective reading it asks (`PipelineConfig.features`;
`ObjectiveIterator` reads one stream per objective). A host that reads several shards
(`make_sharded_iterator`) concatenates their batches in shard order, so the
global batch is the same for any number of hosts.

MLM training batches of a mixture of text corpora or tokenized caches
(`polyglot.data.tokenized`) are made by `streams.StreamIterator` instead: each
data shard's token streams (a contiguous block of each language's lines) are
one local file, read from the cache or tokenized from the text once
(`tokenized.load_corpus`); the same fields and
rows of one whole sequence each, languages drawn per row, made by index in
worker processes, its state a batch count and a counter per language
(`polyglot.data.streams`). Their held-out MLM batches, which the trainer's
evaluation reads, are made from the validation tokens the same way
(`heldout_batches`). Everything else (TFDS, parallel corpora, other reads of a
validation split) goes through tf.data as below.

Determinism: every random choice is seeded from `shard_seed(seed, index)`
(language sampling, shuffle, and stateless masking keyed by batch index), and
tf.data runs with deterministic ordering; so a seed fixes each shard's
stream, and shards do not sample languages or masks in lockstep.

Resume: the state is tf.data's own iterator checkpoint (`tf.train.Checkpoint`
of the iterator: file offsets of every language, the shuffle buffer, rows the
packer has made but not yet handed out, RNG states), plus any batches read
ahead by `DeviceIterator`, and the count of batches made (the masking key); a sharded iterator's state is one such state per
shard (`split_states`), so it can be dealt to another number of hosts.
Restoring is a seek: its cost depends on the size of those buffers (a few MB
at length 512), not on the step. The one exception is a `.gz` text file,
which TensorFlow re-inflates from its start to seek (use `.txt`, or `.xz`,
which is decompressed into the cache once, for big corpora). Rejected
alternatives: tf.data's symbolic checkpoints (smaller state, but measured 10x
slower and restored by replaying elements, so the cost grew with the step),
and a deterministic element index with skip-ahead (it would re-tokenize every
language stream up to the step).

The validation split is read once (no shuffle, no repeat); its last batch is
filled up with padding rows (`segment_ids` 0, `loss_weights` 0). A sharded
iterator ends when its first shard ends.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import queue
import tempfile
import threading
import zipfile
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np

from polyglot import _env
from polyglot.data import heldout, masking, mixtures, preprocessors, schedules, sources, streams
from polyglot.data import tokenized
from polyglot.data import vocab as vocab_lib
from polyglot.data.masking import MlmConfig
from polyglot.errors import ConfigError, DataError

tf = _env.import_tensorflow()
import seqio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

FIELDS = ("input_ids", "targets", "loss_weights", "segment_ids", "positions")
# Batch layouts, by the objective that reads them (polyglot.objectives): "mlm" and
# "tlm" rows have FIELDS; "pairs" rows have PAIR_FIELDS.
FEATURES = ("mlm", "tlm", "pairs")
PAIR_FIELDS = ("query_ids", "key_ids")
SPLITS = ("train", "validation")
_STATE_FORMAT = 2  # 2: batches masked after the pipeline


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """What fixes a host's stream: equal configs give equal batches."""
  mixture: str                      # a registered seqio mixture or task
  length: int                       # tokens per row
  batch_size: int                   # rows per host batch
  seed: int = 0
  split: str = "train"
  mlm: MlmConfig = MlmConfig()
  shuffle_buffer: int = 512         # sequences; 0 disables (train only)
  num_threads: int | None = None    # tf.data threads, or stream workers; None: one per core
  features: str = "mlm"             # the batch layout, one of FEATURES
  # Rates and masking by step (token streams of text corpora and tokenized caches only).
  schedule: schedules.MixtureSchedule | None = None

  def __post_init__(self):
    c = "PipelineConfig"
    if self.length <= 2:
      raise ConfigError(f"{c}.length={self.length} is invalid: use > 2 (<s>, tokens, </s>), "
                        "e.g. 512")
    if self.batch_size < 1:
      raise ConfigError(f"{c}.batch_size={self.batch_size} is invalid: use >= 1 rows per host")
    if self.split not in SPLITS:
      raise ConfigError(f"{c}.split={self.split!r} is invalid: use one of {SPLITS}")
    if self.shuffle_buffer < 0:
      raise ConfigError(f"{c}.shuffle_buffer={self.shuffle_buffer} is invalid: use >= 0")
    if self.num_threads is not None and self.num_threads < 1:
      raise ConfigError(f"{c}.num_threads={self.num_threads} is invalid: use >= 1 or None")
    if self.features not in FEATURES:
      raise ConfigError(f"{c}.features={self.features!r} is unknown: use one of {FEATURES}")


def shard_seed(seed: int, shard_index: int) -> int:
  """The seed of shard `shard_index`'s sampling, shuffle and masking: `seed` itself for
  shard 0 (a one-shard stream is the plain seeded stream), else a hash of both below
  2**31 - 1 (TensorFlow reduces op seeds modulo that), so shards do not move in lockstep."""
  if shard_index == 0:
    return seed
  digest = hashlib.blake2b(f"{seed}/{shard_index}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little") % (2**31 - 1)


def _read_task(task: seqio.Task, cfg: PipelineConfig, shard: seqio.ShardInfo) -> tf.data.Dataset:
  """One language's chunks, as `Task.get_dataset` makes them minus its per-task
  prefetch and parallel map: with hundreds of languages those would give each
  language its own threads and buffers, and the iterator state would grow
  with the language count."""
  source = task.source
  if source.supports_arbitrary_sharding or len(source.list_shards(cfg.split)) >= shard.num_shards:
    ds = source.get_dataset(split=cfg.split, shuffle=False, seed=cfg.seed, shard_info=shard)
  else:  # fewer files than shards: every shard reads them and keeps its share of examples
    ds = source.get_dataset(split=cfg.split, shuffle=False, seed=cfg.seed)
    if sources.dealt(cfg.split, source.num_input_examples(cfg.split), shard):
      ds = ds.shard(shard.num_shards, shard.index)
  if cfg.split == "train":
    ds = ds.repeat()
  ds = task.preprocess_precache(ds, seed=cfg.seed)  # nothing for a task read from its cache
  return task.preprocess_postcache(ds, sequence_length={"targets": cfg.length}, seed=cfg.seed)


def _mix(provider: seqio.Task | seqio.Mixture, cfg: PipelineConfig,
         shard: seqio.ShardInfo) -> tf.data.Dataset:
  """The sequences of every task with the split, sampled at the mixture's rates."""
  if isinstance(provider, seqio.Task):
    return _read_task(provider, cfg, shard)
  tasks = [t for t in provider.tasks if cfg.split in t.splits]
  datasets = [_read_task(t, cfg, shard) for t in tasks]
  rates = [provider.get_rate(t) for t in tasks]
  # Training streams never end; a finite split is read until every language is done.
  return tf.data.Dataset.sample_from_datasets(datasets, rates,
                                              seed=shard_seed(cfg.seed, shard.index),
                                              stop_on_empty_dataset=False)


def _rows(ds: tf.data.Dataset, provider: seqio.Task | seqio.Mixture, cfg: PipelineConfig,
          seed: int) -> tf.data.Dataset:
  """The task's examples -> rows of the `cfg.features` layout."""
  features = provider.output_features
  if cfg.features == "mlm":
    if "targets" not in features:
      raise DataError(f"{cfg.mixture!r} is a parallel mixture (features {sorted(features)}): "
                      "MLM reads monolingual text; use it with TLM or XLCo")
    converter = preprocessors.MlmFeatureConverter(features["targets"].vocabulary)
    return converter(ds, {"targets": cfg.length})
  if "source" not in features:
    raise DataError(f"{cfg.mixture!r} is a monolingual mixture: {cfg.features.upper()} reads "
                    "translation pairs; register a parallel corpus (tasks/parallel.py)")
  vocabulary = features["source"].vocabulary
  if cfg.features == "tlm":
    return preprocessors.tlm_rows(ds, vocabulary, seed, cfg.length)
  return preprocessors.pair_rows(ds, vocabulary, seed, cfg.length)


def build_dataset(cfg: PipelineConfig, shard_index: int, num_shards: int) -> tf.data.Dataset:
  """One shard's tf.data pipeline of batches (see the module docstring)."""
  provider = mixtures.get_provider(cfg.mixture)
  if cfg.split not in provider.splits:
    raise DataError(f"{cfg.mixture!r} has no {cfg.split!r} split (it has "
                    f"{sorted(provider.splits)})")
  seed = shard_seed(cfg.seed, shard_index)
  ds = _mix(provider, cfg, seqio.ShardInfo(index=shard_index, num_shards=num_shards))
  if cfg.split == "train" and cfg.shuffle_buffer:
    ds = ds.shuffle(cfg.shuffle_buffer, seed=seed)
  ds = _rows(ds, provider, cfg, seed)
  ds = ds.batch(cfg.batch_size, drop_remainder=cfg.split == "train").prefetch(2)
  options = tf.data.Options()
  options.deterministic = True
  # The one external state is the SentencePiece tokenizer, a read-only resource:
  # restoring needs the same model, which the task's vocabulary guarantees.
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  options.threading.max_intra_op_parallelism = 1
  if cfg.num_threads:
    options.threading.private_threadpool_size = cfg.num_threads
  return ds.with_options(options)


def _tf_checkpoint(iterator) -> dict[str, bytes]:
  with tempfile.TemporaryDirectory() as tmp:
    tf.train.Checkpoint(iterator=iterator).write(os.path.join(tmp, "iterator"))
    return {p.name: p.read_bytes() for p in pathlib.Path(tmp).iterdir()}


def _tf_restore(iterator, files: dict[str, bytes]) -> None:
  with tempfile.TemporaryDirectory() as tmp:
    for name, data in files.items():
      pathlib.Path(tmp, name).write_bytes(data)
    try:
      tf.train.Checkpoint(iterator=iterator).read(
          os.path.join(tmp, "iterator")).assert_consumed()
    except (tf.errors.OpError, AssertionError) as e:  # another pipeline graph wrote it
      raise DataError("the data iterator state was saved by another input pipeline (a "
                      f"changed corpus or polyglot version): {str(e).splitlines()[0][:200]}"
                      ) from None


def _identity(cfg: PipelineConfig, shard_index: int, num_shards: int) -> dict:
  """What a shard's iterator state must have been saved with."""
  stream = dataclasses.asdict(cfg)
  del stream["num_threads"]  # changes the speed, not the stream
  if cfg.features == "mlm":  # as states were saved before there were other layouts
    del stream["features"]
  return {"format": _STATE_FORMAT, "config": stream, "shard": [shard_index, num_shards]}


class HostIterator:
  """This host's batches as numpy, with `get_state`/`set_state` for exact resume."""

  def __init__(self, cfg: PipelineConfig, shard_index: int, num_shards: int):
    if not 0 <= shard_index < num_shards:
      raise ConfigError(f"shard_index={shard_index} is invalid for num_shards={num_shards}: "
                        "use 0 <= shard_index < num_shards")
    self.cfg = cfg
    self._identity = _identity(cfg, shard_index, num_shards)
    self._iterator = iter(build_dataset(cfg, shard_index, num_shards))
    self._replay: collections.deque[dict[str, np.ndarray]] = collections.deque()
    self._seed = shard_seed(cfg.seed, shard_index)
    self._made = 0  # batches read from the pipeline: the next one's masking key
    vocabulary = next(iter(mixtures.get_provider(cfg.mixture).output_features.values())).vocabulary
    self._mask_id, self._word_start = vocabulary.mask_id, vocabulary.word_start

  @property
  def batch_size(self) -> int:
    return self.cfg.batch_size

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._replay:
      return self._replay.popleft()
    batch = _fill_batch({k: v.numpy() for k, v in next(self._iterator).items()},
                        self.cfg.batch_size)
    self._made += 1
    if self.cfg.features == "pairs":
      return batch
    rng = masking.batch_rng(self._seed, self._made - 1)
    input_ids, loss_weights = masking.mask_batch(batch["targets"], rng, mask_id=self._mask_id,
                                                 word_start=self._word_start, cfg=self.cfg.mlm)
    return {"input_ids": input_ids, "loss_weights": loss_weights, **batch}

  def get_state(self) -> bytes:
    """The position after the last batch returned, as bytes for a checkpoint."""
    return self.state_with(())

  def state_with(self, pending: tuple[dict[str, np.ndarray], ...]) -> bytes:
    """The state as if `pending` (read from this iterator, in order) were not yet returned."""
    replay = list(pending) + list(self._replay)  # `pending` left `_replay` first
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
      z.writestr("identity.json", json.dumps(self._identity, sort_keys=True))
      z.writestr("made.json", json.dumps(self._made))
      for name, data in _tf_checkpoint(self._iterator).items():
        z.writestr(f"tf/{name}", data)
      arrays = {f"{i}/{k}": v for i, batch in enumerate(replay) for k, v in batch.items()}
      buf = io.BytesIO()
      np.savez(buf, **arrays)
      z.writestr("replay.npz", buf.getvalue())
    return out.getvalue()

  def set_state(self, state: bytes) -> None:
    """Continues from `state` (from `get_state` of an iterator with the same settings)."""
    try:
      with zipfile.ZipFile(io.BytesIO(state)) as z:
        identity = json.loads(z.read("identity.json"))
        made = json.loads(z.read("made.json"))
        files = {n[3:]: z.read(n) for n in z.namelist() if n.startswith("tf/")}
        arrays = np.load(io.BytesIO(z.read("replay.npz")))
        replay: dict[int, dict[str, np.ndarray]] = {}
        for key in arrays.files:
          i, field = key.split("/")
          replay.setdefault(int(i), {})[field] = arrays[key]
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
      raise DataError(f"data iterator state is unreadable ({e}): pass bytes from "
                      "HostIterator.get_state") from None
    if identity != json.loads(json.dumps(self._identity, sort_keys=True)):
      raise DataError(f"data iterator state was saved for {identity}, not {self._identity}: "
                      "restore with the settings it was saved with")
    _tf_restore(self._iterator, files)
    self._made = made
    self._replay = collections.deque(replay[i] for i in sorted(replay))


def _fill_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads a short final batch (finite splits) with padding rows."""
  missing = batch_size - len(next(iter(batch.values())))
  if not missing:
    return batch
  pad = dict.fromkeys(("input_ids", "targets", *PAIR_FIELDS), vocab_lib.PAD_ID)  # others 0
  return {k: np.concatenate([v, np.full((missing,) + v.shape[1:], pad.get(k, 0), v.dtype)])
          for k, v in batch.items()}


def make_iterator(mixture_or_task_name: str, *, length: int, batch_size: int, seed: int = 0,
                  shard_index: int | None = None, num_shards: int | None = None,
                  split: str = "train", mlm: MlmConfig = MlmConfig(),
                  shuffle_buffer: int = 512, num_threads: int | None = None,
                  features: str = "mlm", schedule: schedules.MixtureSchedule | None = None
                  ) -> HostIterator | streams.StreamIterator:
  """This host's iterator over `mixture_or_task_name`; `batch_size` rows per host.

  `shard_index`/`num_shards` default to this JAX process and the process count.
  """
  cfg = PipelineConfig(mixture_or_task_name, length=length, batch_size=batch_size, seed=seed,
                       split=split, mlm=mlm, shuffle_buffer=shuffle_buffer,
                       num_threads=num_threads, features=features, schedule=schedule)
  shard_index = jax.process_index() if shard_index is None else shard_index
  num_shards = jax.process_count() if num_shards is None else num_shards
  if not 0 <= shard_index < num_shards:
    raise ConfigError(f"shard_index={shard_index} is invalid for num_shards={num_shards}: "
                      "use 0 <= shard_index < num_shards")
  stream = _token_stream(cfg, shard_index, num_shards)
  if stream is not None:
    return streams.StreamIterator(stream, _identity(cfg, shard_index, num_shards),
                                  cfg.num_threads)
  return HostIterator(cfg, shard_index, num_shards)


def _token_stream(cfg: PipelineConfig, shard_index: int, num_shards: int
                  ) -> streams.Stream | None:
  """The stream of MLM training batches of a mixture of text corpora or tokenized caches
  (`polyglot.data.streams`); None for anything else (tf.data reads it)."""
  provider, tasks = _text_tasks(cfg.mixture, cfg.split)
  if cfg.split != "train" or cfg.features != "mlm" or not tasks:
    if cfg.schedule is not None:
      raise ConfigError(f"a MixtureSchedule needs MLM training on a text corpus or tokenized "
                        f"cache; {cfg.mixture!r} ({cfg.split}, {cfg.features}) is read by "
                        "tf.data: drop the schedule, or train from text or a cache")
    return None
  rates = _rates(provider, tasks)
  sizes, alpha = None, 0.0
  if cfg.schedule is not None:
    by_key, alpha = mixtures.corpus_settings(cfg.mixture)
    sizes = np.asarray(list(by_key.values()), np.float64)
    cfg.schedule.check_languages(len(sizes))
  corpus = tokenized.load_corpus(tasks, cfg.split, seqio.ShardInfo(shard_index, num_shards))
  vocabulary = tasks[0].output_features["targets"].vocabulary
  return streams.Stream(corpus, rates / rates.sum(), cfg.length, cfg.batch_size,
                        shard_seed(cfg.seed, shard_index), cfg.shuffle_buffer, cfg.mlm,
                        vocabulary.mask_id, vocabulary.word_start, cfg.schedule, sizes, alpha)


def _text_tasks(mixture: str, split: str) -> tuple[seqio.Task | seqio.Mixture, list[seqio.Task]]:
  """(the provider, its tasks with `split`), the tasks [] unless all are text corpora or
  tokenized caches (what `tokenized.load_corpus` reads)."""
  provider = mixtures.get_provider(mixture)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  tasks = [t for t in tasks if split in t.splits]
  return provider, tasks if all(map(tokenized.streamable, tasks)) else []


def _rates(provider: seqio.Task | seqio.Mixture, tasks: Sequence[seqio.Task]) -> np.ndarray:
  return np.array([provider.get_rate(t) if isinstance(provider, seqio.Mixture) else 1.0
                   for t in tasks], np.float64)


def heldout_batches(mixture: str, *, shards: Sequence[int], num_shards: int, length: int,
                    batch_size: int, count: int, seed: int, mlm: MlmConfig
                    ) -> list[dict[str, np.ndarray]] | None:
  """This host's first `count` held-out MLM batches of a mixture of text corpora or
  tokenized caches: each data shard's `heldout.mixture_batches` (`batch_size` rows, seeded
  `shard_seed(seed, shard)`), concatenated in shard order; [] when a shard has no held-out
  token; None for any other mixture (its validation split is read by tf.data)."""
  provider, tasks = _text_tasks(mixture, "validation")
  if not tasks:
    return None
  vocabulary = tasks[0].output_features["targets"].vocabulary
  parts = [heldout.mixture_batches(
      tokenized.load_corpus(tasks, "validation", seqio.ShardInfo(s, num_shards)),
      _rates(provider, tasks), length=length, batch_size=batch_size, count=count,
      seed=shard_seed(seed, s), mlm=mlm, mask_id=vocabulary.mask_id,
      word_start=vocabulary.word_start) for s in shards]
  if not all(parts):
    return []
  return [{k: np.concatenate([p[b][k] for p in parts]) for k in parts[0][b]}
          for b in range(count)]


class ShardedIterator:
  """A host's batches from several data shards: one batch from each shard's iterator,
  concatenated in shard order; the state is one `HostIterator` state per shard."""

  def __init__(self, parts: Sequence[HostIterator]):
    if not parts:
      raise ConfigError("ShardedIterator of no shards: pass at least one HostIterator")
    self.parts = list(parts)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(p) for p in self.parts]  # a finite split ends with its first shard
    if len(batches) == 1:
      return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def _split(self, batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """A concatenated batch -> the batches of each shard."""
    ends = np.cumsum([p.batch_size for p in self.parts])[:-1]
    pieces = {k: np.split(v, ends) for k, v in batch.items()}
    return [{k: v[i] for k, v in pieces.items()} for i in range(len(self.parts))]

  def get_state(self) -> bytes:
    return self.state_with(())

  def state_with(self, pending: tuple[dict[str, np.ndarray], ...]) -> bytes:
    """`join_states` of every shard's state, as if `pending` were not yet returned."""
    per_shard = list(zip(*(self._split(b) for b in pending))) or [()] * len(self.parts)
    return join_states([p.state_with(tuple(b)) for p, b in zip(self.parts, per_shard)])

  def set_state(self, state: bytes) -> None:
    states = split_states(state)
    if len(states) != len(self.parts):
      raise DataError(f"data iterator state holds {len(states)} shards, this iterator reads "
                      f"{len(self.parts)}: restore with the shards it was saved with")
    for part, s in zip(self.parts, states):
      part.set_state(s)


def join_states(states: Sequence[bytes]) -> bytes:
  """Several shards' states as one: the state of a `ShardedIterator`."""
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w") as z:
    for i, state in enumerate(states):
      z.writestr(f"shard/{i}", state)
  return out.getvalue()


def split_states(state: bytes) -> list[bytes]:
  """A `ShardedIterator` state -> its shards' `HostIterator` states, in shard order."""
  try:
    with zipfile.ZipFile(io.BytesIO(state)) as z:
      names = sorted((n for n in z.namelist() if n.startswith("shard/")),
                     key=lambda n: int(n[len("shard/"):]))
      return [z.read(n) for n in names]
  except (zipfile.BadZipFile, ValueError) as e:
    raise DataError(f"sharded data iterator state is unreadable ({e}): pass bytes from "
                    "ShardedIterator.get_state") from None


def make_sharded_iterator(mixture_or_task_name: str, *, shards: Sequence[int], num_shards: int,
                          batch_size: int, **kwargs) -> ShardedIterator:
  """Batches of `batch_size` rows from each of `shards` (of `num_shards`), concatenated in
  that order; `kwargs` as for `make_iterator`, whose `num_threads` defaults to this host's
  cores shared among the shards."""
  if kwargs.get("num_threads") is None:
    kwargs["num_threads"] = max(1, len(os.sched_getaffinity(0)) // max(1, len(shards)))
  return ShardedIterator([make_iterator(mixture_or_task_name, batch_size=batch_size,
                                        shard_index=i, num_shards=num_shards, **kwargs)
                          for i in shards])


class ObjectiveIterator:
  """One batch per objective per step, `{name: batch}`, from each objective's iterator
  (a `ShardedIterator`); the state is each one's state by name (`join_objective_states`)."""

  def __init__(self, parts: Mapping[str, ShardedIterator | HostIterator]):
    if not parts:
      raise ConfigError("ObjectiveIterator of no objectives: pass at least one iterator")
    self.parts = dict(parts)

  def __iter__(self) -> Iterator[dict[str, dict[str, np.ndarray]]]:
    return self

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    return {name: next(part) for name, part in self.parts.items()}

  def get_state(self) -> bytes:
    return self.state_with(())

  def state_with(self, pending: tuple[dict[str, dict[str, np.ndarray]], ...]) -> bytes:
    return join_objective_states({name: part.state_with(tuple(b[name] for b in pending))
                                  for name, part in self.parts.items()})

  def set_state(self, state: bytes) -> None:
    states = split_objective_states(state)
    if sorted(states) != sorted(self.parts):
      raise DataError(f"data iterator state holds the objectives {sorted(states)}, this run "
                      f"reads {sorted(self.parts)}: restore with the objectives it was saved with")
    for name, part in self.parts.items():
      part.set_state(states[name])


def join_objective_states(states: Mapping[str, bytes]) -> bytes:
  """Each objective's iterator state as one: the state of an `ObjectiveIterator`."""
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w") as z:
    for name, state in sorted(states.items()):
      z.writestr(f"objective/{name}", state)
  return out.getvalue()


def split_objective_states(state: bytes) -> dict[str, bytes]:
  """An `ObjectiveIterator` state -> each objective's state, by name."""
  try:
    with zipfile.ZipFile(io.BytesIO(state)) as z:
      return {n[len("objective/"):]: z.read(n) for n in z.namelist()
              if n.startswith("objective/")}
  except zipfile.BadZipFile as e:
    raise DataError(f"objectives' data iterator state is unreadable ({e}): pass bytes from "
                    "ObjectiveIterator.get_state") from None


class DeviceIterator:
  """Global `jax.Array` batches from host batches, prefetched by a background thread.

  Each field becomes `jax.make_array_from_process_local_data(sharding, host
  batch)`; `sharding` (a NamedSharding over the batch axis, from the mesh
  module) decides the global layout. Up to `buffer_size` batches wait on
  device so the step never waits for input. `get_state` excludes batches read
  ahead but not yet returned: they are stored in the state and replayed.
  """

  def __init__(self, host: HostIterator | ShardedIterator | ObjectiveIterator,
               sharding: jax.sharding.Sharding,
               buffer_size: int = 2):
    if buffer_size < 1:
      raise ConfigError(f"DeviceIterator buffer_size={buffer_size} is invalid: use >= 1")
    self._host = host
    self._sharding = sharding
    self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
    self._pending: collections.deque[dict[str, np.ndarray]] = collections.deque()
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _put(self, item) -> None:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def _produce(self) -> None:
    try:
      while not self._stop.is_set():
        with self._lock:
          batch = next(self._host)
          self._pending.append(batch)
        self._put(jax.tree.map(
            lambda v: jax.make_array_from_process_local_data(self._sharding, v), batch))
    except BaseException as e:  # StopIteration included: handed to the consumer
      self._put(e)

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if self._thread is None:
      self._thread = threading.Thread(target=self._produce, daemon=True)
      self._thread.start()
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._queue.put(item)  # later calls raise it again
      raise item
    with self._lock:
      self._pending.popleft()
    return item

  def get_state(self) -> bytes:
    """The position after the last batch returned by `__next__`."""
    with self._lock:
      return self._host.state_with(tuple(self._pending))

  def set_state(self, state: bytes) -> None:
    if self._thread is not None:
      raise ConfigError("DeviceIterator.set_state after the first batch: restore the "
                        "HostIterator (or a fresh DeviceIterator) before reading")
    self._host.set_state(state)

  def close(self) -> None:
    """Stops the background thread."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
