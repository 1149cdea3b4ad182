"""Fine-tuning a task head on English, and predicting and scoring any language.

Shape legend: b=batch, l=length, n=labels.

The model is `polyglot.models.build(kind)` for the task type (sequence,
token or span classification, as HF's `XLMRobertaFor*`): its head starts
fresh (seeded by `TaskHparams.seed`), its `encoder/...` subtree is the
pretrained checkpoint's. Training follows XTREME's `third_party/run_*.py`:
AdamW (betas 0.9/0.999, HF's defaults), linear warm-up and decay to 0,
gradient clipping, dropout on, shuffled epochs; every `eval_every_steps`
and at the last step the English dev set is scored and the best parameters
are kept (`--save_only_best_checkpoint`).

Parameters are pure dicts (`nnx.to_pure_dict`) merged into the model inside
`jax.jit` (polyglot/trainer.py); parameters, optimizer state and batches are
placed on the mesh's shardings (polyglot/sharding.py). Every batch has one
shape per task (rows x `max_seq_length`), so each step compiles once; the
last batch of an epoch and of a prediction run is filled with `<s></s>` rows
whose labels are ignored.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from polyglot import models, optimizer, sharding
from polyglot.errors import DataError, PolyglotError
from polyglot.eval import features as F
from polyglot.eval import metrics, report, tasks
from polyglot.eval.hparams import TaskHparams

log = logging.getLogger("polyglot.eval")

MODEL_KINDS = {  # task type -> polyglot.models kind
    "classification": "sequence_classification",
    "tagging": "token_classification",
    "qa": "question_answering",
    "multiple_choice": "multiple_choice",
}
_BATCH_FNS = {"classification": F.classification_batch, "tagging": F.tagging_batch,
              "multiple_choice": F.choice_batch,
              "qa": F.qa_batch}
_LABEL_KEYS = ("labels", "start_positions", "end_positions")
_LOG_TIMES = 10  # loss lines per fine-tuning run


@dataclasses.dataclass(frozen=True)
class Split:
  """Examples of one (language, split) and their features (model windows)."""
  lang: str
  split: str
  examples: Sequence[Any]
  features: Sequence[Any]


# ---- features and batches ----

def qa_window(max_seq_length: int) -> dict[str, int]:
  """XTREME's query cut (64) and stride (128) at its 384 pieces, scaled down
  for shorter windows so that a smoke run with short sequences still has
  room for context."""
  return {"max_seq_length": max_seq_length,
          "max_query_length": min(F.QA_MAX_QUERY_LENGTH, max_seq_length // 4),
          "doc_stride": min(F.QA_DOC_STRIDE, max_seq_length // 3)}


def featurize(spec: tasks.TaskSpec, examples: Sequence[Any], tok: F.OffsetTokenizer,
              max_seq_length: int, *, training: bool) -> list[Any]:
  """Model windows of `examples`; prediction features carry no tagging labels
  (target languages may have tags the English training set lacks)."""
  if spec.task_type == "classification":
    return F.classification_features(examples, tok, spec.labels, max_seq_length)
  if spec.task_type == "tagging":
    return F.tagging_features(examples, tok, max_seq_length, spec.labels if training else None)
  if spec.task_type == "multiple_choice":
    return F.choice_features(examples, tok, max_seq_length)
  return F.qa_features(examples, tok, training=training, **qa_window(max_seq_length))


def make_batch(task_type: str, feats: Sequence[Any], length: int, rows: int, pad_id: int,
               bos_id: int, eos_id: int) -> dict[str, np.ndarray]:
  """input_ids [rows, length] ([rows, choices, length]) and the labels of `task_type`,
  padded to `rows`."""
  batch = _BATCH_FNS[task_type](feats, length, pad_id)
  del batch["input_mask"]  # the model derives it from `<pad>`
  extra = rows - len(feats)
  if extra < 0:
    raise DataError(f"{len(feats)} features do not fit a batch of {rows} rows")
  filler = np.full((extra, *batch["input_ids"].shape[1:]), pad_id, np.int32)  # [extra, ..., l]
  filler[..., :2] = (bos_id, eos_id)  # never an all-padding row: no fully masked attention
  batch["input_ids"] = np.concatenate([batch["input_ids"], filler])
  for key in _LABEL_KEYS:
    if key in batch:
      pad = np.full((extra, *batch[key].shape[1:]), F.IGNORE_LABEL, np.int32)
      batch[key] = np.concatenate([batch[key], pad])
  return batch


def batch_multiple(mesh: Mesh, rules: sharding.Rules = sharding.DEFAULT_RULES) -> int:
  """Rows of a batch must be a multiple of this: the mesh axes `batch` maps to."""
  spec = sharding.logical_to_spec(("batch",), rules)[0]
  axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
  return math.prod(dict(mesh.shape)[a] for a in axes)


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


# ---- loss ----

def masked_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean cross-entropy over labels != IGNORE_LABEL: logits [..., n], labels [...]."""
  valid = labels != F.IGNORE_LABEL
  safe = jnp.where(valid, labels, 0)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
  return ((log_z - picked) * valid).sum() / jnp.maximum(valid.sum(), 1)


def task_loss(task_type: str, outputs, batch: dict[str, jax.Array]) -> jax.Array:
  """Classification [b, n] or tagging [b, l, n] logits against `labels`; QA
  (start, end) [b, l] logits, the mean of both losses (HF `...ForQuestionAnswering`)."""
  if task_type == "qa":
    start, end = outputs
    return (masked_cross_entropy(start, batch["start_positions"])
            + masked_cross_entropy(end, batch["end_positions"])) / 2
  return masked_cross_entropy(outputs, batch["labels"])


def _loss(params, batch, dropout_rng, *, graphdef: nnx.GraphDef, task_type: str) -> jax.Array:
  model = nnx.merge(graphdef, params)
  outputs, aux = model(batch["input_ids"], dropout_rng=dropout_rng)
  moe_losses = sum((v for k, v in aux.items() if k.endswith("_loss")), jnp.float32(0))
  return task_loss(task_type, outputs, batch) + moe_losses


def train_step(params, opt_state, batch, rng, step, *, graphdef: nnx.GraphDef, task_type: str,
               tx: optax.GradientTransformation):
  """One AdamW update; dropout keyed by `fold_in(rng, step)`. -> (params, opt_state, loss)."""
  loss, grads = jax.value_and_grad(_loss)(params, batch, jax.random.fold_in(rng, step),
                                          graphdef=graphdef, task_type=task_type)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def optim_config(hp: TaskHparams) -> optimizer.OptimConfig:
  """XTREME's optimizer: HF AdamW (betas 0.9/0.999), linear schedule to 0."""
  return optimizer.OptimConfig(
      learning_rate=hp.learning_rate, warmup_steps=hp.warmup_steps, schedule="linear",
      end_learning_rate=0.0, b1=0.9, b2=0.999, eps=hp.adam_epsilon,
      weight_decay=hp.weight_decay, clip_norm=hp.max_grad_norm)


# ---- the model on a mesh ----

@dataclasses.dataclass(frozen=True)
class TaskModel:
  """A task model's graph, abstract parameters and shardings, and its jitted functions.

  One per (model kind, label count, encoder config, mesh) and process
  (`task_model`): tasks with the same head (XQuAD, MLQA, TyDi QA) and later
  runs in the same process share the compiled steps.
  """
  kind: str
  num_labels: int | None
  cfg: models.EncoderConfig
  mesh: Mesh
  graphdef: nnx.GraphDef
  abstract: Any   # pure dict of ShapeDtypeStructs
  shardings: Any  # pure dict of NamedShardings, same structure
  _compiled: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  @property
  def task_type(self) -> str:
    return next(t for t, k in MODEL_KINDS.items() if k == self.kind)

  def build(self, seed: int) -> nnx.Module:
    """The model (HF `XLMRobertaFor*` layout) with freshly initialised parameters."""
    return models.build(self.kind, self.cfg, rngs=nnx.Rngs(seed), num_labels=self.num_labels)

  @functools.cached_property
  def forward(self) -> Callable:
    """(params, input_ids [b, l]) -> logits, dropout off."""
    graphdef = self.graphdef
    return jax.jit(lambda p, ids: nnx.merge(graphdef, p)(ids)[0])

  def head_init(self, seed: int) -> Callable:
    """() -> fresh parameters of everything but the encoder, in their shards."""
    if ("heads", seed) not in self._compiled:
      def heads():  # XLA drops the unused encoder initialisation: only the heads compile
        params = nnx.to_pure_dict(nnx.split(self.build(seed))[1])
        return {k: v for k, v in params.items() if k != "encoder"}
      out = {k: v for k, v in self.shardings.items() if k != "encoder"}
      self._compiled[("heads", seed)] = jax.jit(heads, out_shardings=out)
    return self._compiled[("heads", seed)]

  def trainer(self, optim: optimizer.OptimConfig, num_steps: int) -> tuple[Callable, Callable]:
    """(jitted optimizer init, jitted train step) for a run of `num_steps` updates."""
    key = ("train", optim, num_steps)
    if key not in self._compiled:
      tx, _ = optimizer.make_optimizer(optim, num_steps)
      opt_sh = sharding.optimizer_shardings(tx, jax.eval_shape(tx.init, self.abstract),
                                            self.shardings, self.mesh)
      step = jax.jit(functools.partial(train_step, graphdef=self.graphdef,
                                       task_type=self.task_type, tx=tx),
                     out_shardings=(self.shardings, opt_sh, None), donate_argnums=(0, 1))
      self._compiled[key] = (jax.jit(tx.init, out_shardings=opt_sh), step)
    return self._compiled[key]

  def put_batch(self, batch):
    """A batch (pytree of [b, ...] arrays) onto the mesh, split over its batch axes."""
    return jax.device_put(batch, sharding.batch_shardings(batch, self.mesh))


@functools.lru_cache(maxsize=32)
def _task_model(kind: str, num_labels: int | None, cfg: models.EncoderConfig,
                mesh: Mesh) -> TaskModel:
  make = lambda: models.build(kind, cfg, rngs=nnx.Rngs(0), num_labels=num_labels)  # noqa: E731
  graphdef, state, state_sh = sharding.abstract_state(make, mesh)
  return TaskModel(kind, num_labels, cfg, mesh, graphdef, nnx.to_pure_dict(state),
                   nnx.to_pure_dict(state_sh))


def task_model(spec: tasks.TaskSpec, cfg: models.EncoderConfig, mesh: Mesh) -> TaskModel:
  """Shapes and shardings of `spec`'s model (no parameter allocated), cached per process."""
  if spec.task_type not in MODEL_KINDS:
    raise PolyglotError(f"{spec.name} is a {spec.task_type} task: it is not fine-tuned")
  return _task_model(MODEL_KINDS[spec.task_type], len(spec.labels) or None, cfg, mesh)


def init_params(tm: TaskModel, encoder_params, seed: int):
  """Fresh head parameters (seeded) around a copy of the pretrained encoder's parameters."""
  want = jax.tree.map(lambda x: (x.shape, x.dtype), tm.abstract["encoder"])
  got = jax.tree.map(lambda x: (x.shape, x.dtype), encoder_params)
  if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
    raise PolyglotError("the checkpoint's encoder parameters do not match its model_config; "
                        "is the checkpoint complete?")
  with sharding.use_mesh(tm.mesh):
    params = tm.head_init(seed)()
  # A copy: the training step donates its parameters, the pretrained ones serve every task.
  params["encoder"] = jax.device_put(encoder_params, tm.shardings["encoder"], may_alias=False)
  return params


# ---- prediction and scoring ----

def predict(tm: TaskModel, params, feats: Sequence[Any], length: int, rows: int, tok,
            desc: str):
  """Logits of every feature, dropout off: classification [N, n], tagging
  [N, l, n], QA ([N, l], [N, l]), multiple choice [N, c]."""
  rows = round_up(rows, batch_multiple(tm.mesh))
  chunks = []
  starts = range(0, len(feats), rows)
  with sharding.use_mesh(tm.mesh):
    for start in report.progress(starts, total=len(starts), desc=desc, unit="batch"):
      part = feats[start:start + rows]
      batch = make_batch(tm.task_type, part, length, rows, tok.pad_id, tok.bos_id,
                         tok.eos_id)
      out = tm.forward(params, tm.put_batch(batch["input_ids"]))
      chunks.append(jax.tree.map(lambda x, n=len(part): np.asarray(x)[:n], out))
  if not chunks:
    raise DataError(f"{desc}: no features to predict")
  return jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)


def has_gold(spec: tasks.TaskSpec, examples: Sequence[Any]) -> bool:
  """False for an unlabelled copy: a QA split whose answers are all empty (the
  shared TyDi QA GoldP dev files, which would score an empty prediction as an
  exact match), or a classification split without labels (XGLUE's test files
  as first released)."""
  if spec.task_type == "qa":
    return any(a.text.strip() for ex in examples for a in ex.answers)
  return spec.task_type == "tagging" or all(ex.label is not None for ex in examples)


def _is_iob(labels: Sequence[str]) -> bool:
  return all(label == "O" or label[:2] in ("B-", "I-") for label in labels)


def expected_grades(spec: tasks.TaskSpec, logits) -> list[float]:
  """Each example's expected relevance grade under the softmax of its [N, n] logits over
  `spec.labels` (numeric grades): a ranking score that breaks the ties of an argmax."""
  grades = np.array([float(label) for label in spec.labels])  # [n]
  logits = np.asarray(logits, np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  return list((p / p.sum(-1, keepdims=True)) @ grades)  # [N]


def predictions(spec: tasks.TaskSpec, data: Split, outputs) -> Any:
  """What the model predicts for each example of a split, from its outputs: a label each
  (classification), a ranking score each (`ndcg`), a choice index each (multiple choice),
  a tag per word of each sentence (tagging), question id -> answer text (QA)."""
  if spec.metric == "ndcg":
    return expected_grades(spec, outputs)
  if spec.task_type == "classification":
    return [spec.labels[i] for i in np.asarray(outputs).argmax(-1)]  # [N, n] -> [N]
  if spec.task_type == "multiple_choice":
    return [int(i) for i in np.asarray(outputs).argmax(-1)]  # [N, c] -> [N]
  if spec.task_type == "tagging":
    return F.word_predictions(data.examples, data.features, outputs, spec.labels)
  return F.best_answers(F.qa_nbest(data.examples, data.features, *outputs))


def metrics_of(spec: tasks.TaskSpec, data: Split, pred) -> dict[str, float]:
  """The task's metrics (percent) of one split's `predictions`."""
  if spec.metric == "ndcg":
    return {"ndcg": metrics.mean_ndcg([ex.query_id for ex in data.examples],
                                      [ex.label for ex in data.examples], pred)}
  if spec.task_type in ("classification", "multiple_choice"):
    return {"accuracy": metrics.accuracy([ex.label for ex in data.examples], pred)}
  if spec.task_type == "tagging":
    gold = [list(ex.tags) for ex in data.examples]
    if _is_iob(spec.labels):  # MasakhaNER's DATE vs English CoNLL training: read as O
      gold = metrics.map_unseen_entity_types(gold, spec.labels)
    return metrics.span_f1(gold, pred)
  lang = data.lang if spec.metric == "mlqa" else None
  return metrics.qa_scores(metrics.gold_answers(data.examples), pred, lang=lang)


def score(spec: tasks.TaskSpec, data: Split, outputs) -> dict[str, float]:
  """The task's metrics (percent) of one split's model outputs."""
  return metrics_of(spec, data, predictions(spec, data, outputs))


def evaluate(spec: tasks.TaskSpec, tm: TaskModel, params, data: Split, hp: TaskHparams,
             rows: int, tok) -> tuple[dict[str, float], Any]:
  """`spec`'s metrics on `data` and the predictions scored, predicted in batches of `rows`."""
  outputs = predict(tm, params, data.features, hp.max_seq_length, rows, tok,
                    f"{spec.name} {data.lang}/{data.split}")
  pred = predictions(spec, data, outputs)
  return metrics_of(spec, data, pred), pred


# ---- fine-tuning ----

@dataclasses.dataclass(frozen=True)
class Result:
  """The selected parameters of a fine-tuning run and how they were chosen."""
  params: Any
  step: int                 # the selected step
  num_steps: int
  dev_score: float | None   # headline score on English dev at `step`, if scored


def num_train_steps(hp: TaskHparams, n: int) -> int:
  """`max_steps`, else `num_train_epochs` of ceil(n / batch_size) steps."""
  return hp.max_steps or math.ceil(hp.num_train_epochs * math.ceil(n / hp.batch_size))


def batch_indices(n: int, batch_size: int, num_steps: int, seed: int) -> Iterator[np.ndarray]:
  """Example indices per step: shuffled epochs, the last batch of each smaller."""
  rng = np.random.default_rng(seed)
  step = 0
  while True:
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
      if step == num_steps:
        return
      step += 1
      yield order[start:start + batch_size]


def _eval_steps(hp: TaskHparams, num_steps: int, has_dev: bool) -> set[int]:
  if not has_dev or hp.eval_every_steps == 0:
    return set()
  return set(range(hp.eval_every_steps, num_steps, hp.eval_every_steps)) | {num_steps}


def _check_loss(name: str, step: int, loss: float) -> None:
  if not math.isfinite(loss):
    raise PolyglotError(f"{name}: fine-tuning loss is {loss} at step {step}: lower "
                        f"--gin.{name}/TaskHparams.learning_rate")


def fine_tune(spec: tasks.TaskSpec, tm: TaskModel, hp: TaskHparams, encoder_params, train: Split,
              dev: Split | None, tok, rows: int, start=None) -> Result:
  """Trains the head and encoder on `train`; keeps the best English-dev step.

  From the pretrained encoder with a new head, or from `start`, a whole task model (the
  result of a first stage on an intermediate task), with a fresh optimizer.
  """
  name, n = spec.name, len(train.features)
  if not n:
    raise DataError(f"{name}: no usable English training example; check the train file "
                    "(QA answers must be the context text at their answer_start)")
  num_steps = num_train_steps(hp, n)
  params = init_params(tm, encoder_params, hp.seed) if start is None else start
  init_opt, step_fn = tm.trainer(optim_config(hp), num_steps)
  rng = jax.random.key(hp.seed)
  evals = _eval_steps(hp, num_steps, dev is not None)
  log_every = max(1, num_steps // _LOG_TIMES)
  best: tuple[float, int, Any] | None = None
  log.info("%s: fine-tuning on %d English features for %d steps (batch %d)", name, n,
           num_steps, hp.batch_size)
  with sharding.use_mesh(tm.mesh):
    opt_state = init_opt(params)
    bar = report.progress(batch_indices(n, hp.batch_size, num_steps, hp.seed), total=num_steps,
                          desc=f"{name} fine-tune", unit="step")
    for step, idx in enumerate(bar, 1):
      batch = make_batch(tm.task_type, [train.features[i] for i in idx],
                         hp.max_seq_length, hp.batch_size, tok.pad_id, tok.bos_id, tok.eos_id)
      params, opt_state, loss = step_fn(params, opt_state, tm.put_batch(batch), rng,
                                        jnp.int32(step))
      if step % log_every == 0 or step in evals:
        loss = float(loss)
        _check_loss(name, step, loss)
        bar.set_postfix(loss=f"{loss:.4f}")
        log.info("%s: step %d/%d loss %.4f", name, step, num_steps, loss)
      if step in evals:
        dev_score = report.headline(spec, evaluate(spec, tm, params, dev, hp, rows, tok)[0])
        log.info("%s: step %d English dev %.2f", name, step, dev_score)
        if best is None or dev_score > best[0]:
          best = (dev_score, step, jax.device_put(params, tm.shardings, may_alias=False))
  if best is None:
    return Result(params, num_steps, num_steps, None)
  return Result(best[2], best[1], num_steps, best[0])
