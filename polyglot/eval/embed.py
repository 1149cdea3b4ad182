"""Sentence embeddings from the frozen pretrained encoder (Tatoeba, BUCC 2018).

Shape legend: n=sentences, b=batch, l=length, d=embed.

Each sentence is `<s> pieces </s>`, cut to `RetrievalHparams.max_seq_length`
(XTREME's `run_retrieval.py` `prepare_batch`), embedded by
`polyglot.models.sentence_embeddings` at `RetrievalHparams.layer` with its
pooling ("cls" is the model's "first"). Sentences are batched in order of
length and padded to a power of two, so few shapes compile; rows come back
in input order. Pooling ignores padding, so batching changes no embedding.

The layer and length are fitted to the encoder unless the user set them
(`hparams.fit`): XTREME's published layer for its depths (hidden state 8 of
12, 14 of 24), otherwise round(2/3 x num_layers); at most `max_len` pieces.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from polyglot import models, sharding
from polyglot.eval import features as F
from polyglot.eval import report
from polyglot.eval.finetune import batch_multiple, round_up
from polyglot.eval.hparams import RetrievalHparams

POOLINGS = {"mean": "mean", "cls": "first"}  # RetrievalHparams -> polyglot.models.pool
_MIN_LENGTH = 16


def bucket_length(n: int, max_length: int) -> int:
  """The smallest power of two >= n (at least 16), capped at `max_length`."""
  return min(max(_MIN_LENGTH, 1 << (max(n, 1) - 1).bit_length()), max_length)


@functools.lru_cache(maxsize=8)
def _embed_fn(graphdef: nnx.GraphDef):
  """Jitted (params, input_ids [b, l]) -> [b, d]; one per encoder graph and process."""

  def embed(params, input_ids, *, layer: int, pooling: str) -> jax.Array:
    return models.sentence_embeddings(nnx.merge(graphdef, params), input_ids, layer=layer,
                                      pooling=pooling)
  return jax.jit(embed, static_argnames=("layer", "pooling"))


class Embedder:
  """Embeds sentences with one encoder; one compiled function per (layer, pooling, shape)."""

  def __init__(self, encoder: models.Encoder, tok: F.Tokenizer, mesh: Mesh,
               show_progress: bool = True):
    self.graphdef, self.params = nnx.split(encoder)
    self.hidden_size = encoder.cfg.hidden_size
    self.tok = tok
    self.mesh = mesh
    self.show_progress = show_progress

  def __call__(self, sentences: Sequence[str], hp: RetrievalHparams, desc: str) -> np.ndarray:
    """[n, d] float32 embeddings of `sentences`, in order."""
    ids = [F.encode_single(self.tok, s, hp.max_seq_length) for s in sentences]
    order = np.argsort([len(x) for x in ids], kind="stable")
    rows = round_up(hp.batch_size, batch_multiple(self.mesh))
    out = np.zeros((len(ids), self.hidden_size), np.float32)
    starts = range(0, len(ids), rows)
    if self.show_progress:
      starts = report.progress(starts, total=len(starts), desc=desc, unit="batch")
    with sharding.use_mesh(self.mesh):
      for start in starts:
        take = order[start:start + rows]
        length = bucket_length(max(len(ids[i]) for i in take), hp.max_seq_length)
        batch = F.pad_rows([ids[i] for i in take] + [[self.tok.bos_id, self.tok.eos_id]]
                           * (rows - len(take)), length, self.tok.pad_id)  # [b, l]
        batch = jax.device_put(batch, sharding.batch_shardings(batch, self.mesh))
        emb = _embed_fn(self.graphdef)(self.params, batch, layer=hp.layer,
                                       pooling=POOLINGS[hp.pooling])  # [b, d]
        out[take] = _host_array(emb)[:len(take)]
    return out


def _host_array(x: jax.Array) -> np.ndarray:
  """`x` whole on this host, also when its rows are spread over several processes."""
  if x.is_fully_addressable:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))

