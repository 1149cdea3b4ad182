"""Cross-lingual contrast (XLCo; Chi et al., InfoXLM, NAACL 2021, section 3.2).

Shapes: b=batch, l=length, d=embed, n=queue size.

A batch is b translation pairs, the pipeline's "pairs" layout: `query_ids`
and `key_ids`, int32 [b, l], each row `<s> sentence </s>` padded with `<pad>`
(which side is the query is drawn per pair, so both directions train). A
sentence's representation is the `<s>` hidden state of `layer` (InfoXLM: 8 of
12; here round(2/3 x num_layers) unless set) or the mean over its tokens.
The loss is InfoNCE: the query must pick its translation among negatives,

    loss = -log exp(q.k+ / T) / (exp(q.k+ / T) + sum_neg exp(q.k- / T)).

Negatives, `negatives=`:
- "queue" (InfoXLM, after MoCo): keys come from a momentum encoder, an
  exponential moving average of the encoder (`momentum`), without gradient;
  negatives are the keys of the last `queue_size` pairs, a queue that fills
  as training goes (empty slots are masked out). The momentum encoder and
  the queue are objective state: in the train state, sharded (the momentum
  encoder like the encoder, the queue along `embed`), checkpointed, restored.
- "in_batch": keys come from the encoder itself, with gradient; negatives
  are the other pairs of the batch (as LaBSE and mUSE). No state; b - 1
  negatives per query.

Vectors are L2-normalised (cosine similarity, as MoCo) when `normalize`:
InfoXLM's code takes raw dot products of a projection, which for an encoder
of any width can make the logits unbounded at T = 0.25.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from polyglot import sharding
from polyglot.errors import ConfigError
from polyglot.models.encoder import default_segments
from polyglot.models.heads import POOLINGS, pool
from polyglot.objectives.base import (Batch, DataSpec, Objective,
                                      require_parallel_mixture)

NEGATIVES = ("queue", "in_batch")


def default_layer(num_layers: int) -> int:
  """InfoXLM's layer 8 of 12, as a share of the depth: round(2/3 x L)."""
  return round(2 * num_layers / 3)


def info_nce(q: jax.Array, k: jax.Array, negatives: jax.Array, valid: jax.Array,
             temperature: float) -> tuple[jax.Array, jax.Array]:
  """(mean loss, accuracy): q, k [b, d], negatives [n, d] with `valid` [n] bool."""
  pos = jnp.sum(q * k, axis=-1, keepdims=True)                     # [b, 1]
  neg = jnp.where(valid[None, :], q @ negatives.T, -jnp.inf)       # [b, n]
  logits = jnp.concatenate([pos, neg], axis=1) / temperature       # [b, 1 + n]
  loss = jax.nn.logsumexp(logits, axis=1) - logits[:, 0]
  return loss.mean(), (jnp.argmax(logits, axis=1) == 0).mean()


def in_batch_nce(q: jax.Array, k: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """(mean loss, accuracy): q, k [b, d]; pair i's negatives are the other rows' keys."""
  logits = q @ k.T / temperature                                   # [b, b]
  loss = jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)
  return loss.mean(), (jnp.argmax(logits, axis=1) == jnp.arange(q.shape[0])).mean()


def _normalized(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


@dataclasses.dataclass(frozen=True)
class Contrastive(Objective):
  """XLCo on a "pairs" batch (see the module docstring)."""
  layer: int = 8
  pooling: str = "first"
  temperature: float = 0.25
  negatives: str = "queue"
  queue_size: int = 131072
  momentum: float = 0.9999
  normalize: bool = True
  hidden_size: int = 768
  pad_id: int = 1

  def tokens(self, batch: Batch) -> jax.Array:
    return sum((batch[k] != self.pad_id).sum() for k in ("query_ids", "key_ids"))

  def _vectors(self, model, input_ids: jax.Array, rng: jax.Array | None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """[b, l] ids -> ([b, d] float32 sentence vectors, encoder aux)."""
    segment_ids, positions = default_segments(input_ids, model.encoder.cfg.pad_id)
    out = model.encoder(input_ids, segment_ids, positions, dropout_rng=rng,
                        output_hidden_states=True)
    x = pool(out.hidden_states[self.layer], segment_ids, self.pooling)
    return (_normalized(x) if self.normalize else x), out.aux

  def grads(self, params, graphdef: nnx.GraphDef, batch: Batch, rng, state):
    queue = self.negatives == "queue"
    if queue:  # keys from the momentum encoder: no gradient reaches it
      key_model = nnx.merge(graphdef, dict(params, encoder=state["momentum"]))
      keys = jax.lax.stop_gradient(self._vectors(key_model, batch["key_ids"], None)[0])
    r_query, r_key = (None, None) if rng is None else jax.random.split(rng)

    def loss_fn(p):
      model = nnx.merge(graphdef, p)
      q, aux = self._vectors(model, batch["query_ids"], r_query)
      if queue:
        valid = jnp.arange(self.queue_size) < state["filled"]
        loss, accuracy = info_nce(q, keys, state["queue"], valid, self.temperature)
      else:
        k, key_aux = self._vectors(model, batch["key_ids"], r_key)
        loss, accuracy = in_batch_nce(q, k, self.temperature)
        aux = {name: aux[name] + key_aux[name] for name in aux}
      metrics = {"loss": loss, "accuracy": accuracy}
      for name, value in aux.items():  # MoE: the encoder's auxiliary losses
        if name.endswith("_loss"):
          loss = loss + value
          metrics[name] = value
      return loss, metrics

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if queue:
      metrics["queue_filled"] = state["filled"] / self.queue_size
    return grads, loss, {f"{self.name}_{k}": v for k, v in metrics.items()}, (
        keys if queue else None)

  def init_state(self, params) -> dict[str, Any]:
    if self.negatives != "queue":
      return {}
    return {"momentum": jax.tree.map(jnp.copy, params["encoder"]),
            "queue": jnp.zeros((self.queue_size, self.hidden_size), jnp.float32),  # [n, d]
            "filled": jnp.zeros((), jnp.int32),   # keys in the queue (<= n)
            "next": jnp.zeros((), jnp.int32)}     # the slot the next batch's keys go to

  def state_shardings(self, param_shardings, mesh, rules):
    if self.negatives != "queue":
      return {}
    replicated = NamedSharding(mesh, PartitionSpec())
    queue_spec = sharding.logical_to_spec((None, "embed"), rules,
                                          (self.queue_size, self.hidden_size), mesh)
    return {"momentum": param_shardings["encoder"], "queue": NamedSharding(mesh, queue_spec),
            "filled": replicated, "next": replicated}

  def update_state(self, state, params, keys):
    """The momentum step on the updated encoder, then the batch's keys into the queue."""
    if self.negatives != "queue":
      return state
    m = self.momentum
    momentum = jax.tree.map(lambda k, q: m * k + (1 - m) * q, state["momentum"],
                            params["encoder"])
    b = keys.shape[0]
    queue = jax.lax.dynamic_update_slice(state["queue"], keys.astype(jnp.float32),
                                         (state["next"], 0))
    return {"momentum": momentum, "queue": queue,
            "filled": jnp.minimum(state["filled"] + b, self.queue_size),
            "next": (state["next"] + b) % self.queue_size}

  def describe(self):
    return super().describe() | {k: getattr(self, k) for k in (
        "layer", "pooling", "temperature", "negatives", "queue_size", "momentum", "normalize")}


@dataclasses.dataclass(frozen=True)
class XLCo:
  """gin `XLCo`. Defaults are InfoXLM's pretraining command (microsoft/unilm,
  infoxlm/README.md: `--xlco_layer 8 --xlco_queue_size 131072 --xlco_momentum
  constant,0.9999`; `--xlco_softmax_tau` 0.25 by default in its criterion).
  `mixture` is a parallel mixture; `batch_size` (pairs) and `seq_len` default to
  TrainConfig's.
  """
  weight: float = 1.0
  mixture: str | None = None
  batch_size: int | None = None
  seq_len: int | None = None
  layer: int | None = None            # None: round(2/3 x num_layers), 8 of 12 as InfoXLM
  pooling: str = "first"              # `<s>` as InfoXLM; or "mean"
  temperature: float = 0.25
  negatives: str = "queue"
  queue_size: int = 131072
  momentum: float = 0.9999
  normalize: bool = True

  def build(self, defaults: DataSpec, loss_cfg, model_cfg) -> Objective:
    c = "XLCo"
    require_parallel_mixture(c, self.mixture)
    if self.negatives not in NEGATIVES:
      raise ConfigError(f"{c}.negatives={self.negatives!r} is unknown: use one of {NEGATIVES}")
    if self.pooling not in POOLINGS:
      raise ConfigError(f"{c}.pooling={self.pooling!r} is unknown: use one of {POOLINGS}")
    if not self.temperature > 0:
      raise ConfigError(f"{c}.temperature={self.temperature} is invalid: use > 0 (0.25)")
    if not 0 <= self.momentum < 1:
      raise ConfigError(f"{c}.momentum={self.momentum} is invalid: use a rate in [0, 1)")
    if loss_cfg.microbatches != 1:
      raise ConfigError(f"LossConfig.microbatches={loss_cfg.microbatches} does not apply to "
                        "XLCo (its negatives are the whole batch's): use 1")
    n = model_cfg.num_layers
    layer = default_layer(n) if self.layer is None else self.layer
    if not 0 <= layer <= n:
      raise ConfigError(f"{c}.layer={layer} is out of range for a {n}-layer encoder: use 0..{n}")
    data = DataSpec(self.mixture, "pairs", self.batch_size or defaults.batch_size,
                    self.seq_len or defaults.seq_len)
    if self.negatives == "queue" and (self.queue_size < data.batch_size
                                      or self.queue_size % data.batch_size):
      raise ConfigError(f"{c}.queue_size={self.queue_size} is not a multiple of the "
                        f"{data.batch_size} pairs per step: use e.g. "
                        f"{data.batch_size * max(1, math.ceil(self.queue_size / data.batch_size))}")
    return Contrastive("xlco", self.weight, data, layer, self.pooling, self.temperature,
                       self.negatives, self.queue_size, self.momentum, self.normalize,
                       model_cfg.hidden_size, model_cfg.pad_id)
