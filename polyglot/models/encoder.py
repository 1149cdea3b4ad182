"""The XLM-R encoder in Flax NNX, exactly Hugging Face's `XLMRobertaModel`.

Shapes: b=batch, l=length (queries), m=length (keys), d=embed, h=heads,
k=head dim, f=mlp.

Inputs follow the batch contract of DESIGN.md: `segment_ids` are 1, 2, ...
for the sequences packed in a row and 0 for padding; `positions` restart at 0
in each segment. Tokens attend only within their own segment. Without
`segment_ids` and `positions`, both are derived from `input_ids != pad_id`, as
HF does (`create_position_ids_from_input_ids`).

Two parameter layouts of the blocks (`EncoderConfig.scan_layers`), with p =
`cfg.layer_period` (MoE `every_n_layers`, else 1) and L = `num_layers`:
- per layer (default, HF's): `encoder/layers/{i}/...`, i < L, run by a Python
  loop; compile time grows with L.
- scanned: `encoder/layers/{j}/...`, j < p, every parameter with a leading
  axis [L / p] named "layers" (never sharded): entry [g] of `layers/{j}` is
  layer g * p + j. Dense models have only `layers/0`; an MoE model with
  every_n_layers=2 keeps its dense blocks in `layers/0` and its MoE blocks in
  `layers/1`. One `jax.lax.scan` step runs a group of p blocks, and `nnx.vmap`
  builds each stacked block, so one group is traced and compiled whatever L
  is. HF conversion unstacks (`unstack_layers`).
Both layouts draw the same initial values from the same `rngs` and use the
same dropout keys, so they compute the same function.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyglot import sharding
from polyglot.models import layers, splash
from polyglot.models.config import EncoderConfig

ACTIVATION_AXES = ("batch", "length", "embed")
# The stacked axis of scanned block parameters, a logical name of polyglot/sharding.py.
LAYERS_AXIS = "layers"
_LAYERS_METADATA = {nnx.PARTITION_NAME: LAYERS_AXIS}


class EncoderOutput(NamedTuple):
  last_hidden: jax.Array                    # [b, l, d]
  hidden_states: tuple[jax.Array, ...]      # embeddings, then each layer: L+1 x [b, l, d]; () unless asked
  aux: dict[str, jax.Array]                 # MoE losses and router statistics, summed over layers


def default_segments(input_ids: jax.Array, pad_id: int) -> tuple[jax.Array, jax.Array]:
  """One segment per row: ([b, l] segment_ids, [b, l] positions), 0 on padding."""
  valid = (input_ids != pad_id).astype(jnp.int32)
  positions = (jnp.cumsum(valid, axis=1) - 1) * valid
  return valid, positions


def attention_mask(segment_ids: jax.Array) -> jax.Array:
  """[b, l] segment ids -> [b, 1, l, m] boolean mask (True = attend).

  A real token attends to the tokens of its own segment. A padding query
  attends to every real key, as in HF (whose mask covers keys only), so no row
  is fully masked and outputs at padding positions match HF's too.
  """
  q, k = segment_ids[:, :, None], segment_ids[:, None, :]
  mask = ((q == k) | (q == 0)) & (k != 0)
  return mask[:, None, :, :]


class Embeddings(nnx.Module):
  """Word + learned position + token type embeddings, LayerNorm, dropout."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    init = layers.normal(cfg.initializer_range)
    self.word = layers.param(rngs, init, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
    self.position = layers.param(rngs, init, (cfg.num_positions, cfg.hidden_size), (None, "embed"))
    self.token_type = layers.param(rngs, init, (cfg.type_vocab_size, cfg.hidden_size),
                                   (None, "embed"))
    self.norm = layers.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, rngs=rngs,
                                 dtype=cfg.dtype)
    self.pad_id = cfg.pad_id
    self.rate = cfg.dropout_rate

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array, positions: jax.Array,
               token_type_ids: jax.Array | None, rng: jax.Array | None) -> jax.Array:
    """[b, l] ids -> [b, l, d]."""
    # HF position ids start at pad_id + 1; padding takes the pad_id row.
    position_ids = jnp.where(segment_ids > 0, positions + self.pad_id + 1, self.pad_id)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = (jnp.take(self.word[...], input_ids, axis=0)
         + jnp.take(self.position[...], position_ids, axis=0)
         + jnp.take(self.token_type[...], token_type_ids, axis=0))  # [b, l, d]
    return layers.dropout(self.norm(x), self.rate, rng)


class HeadProjection(nnx.Module):
  """Query, key or value projection: [b, l, d] -> [b, l, h, k]."""

  def __init__(self, d: int, h: int, *, init_std: float, rngs: nnx.Rngs, dtype=jnp.float32):
    self.kernel = layers.param(rngs, layers.normal(init_std), (d, h, d // h),
                               ("embed", "heads", "kv"))
    self.bias = layers.param(rngs, layers.zeros, (h, d // h), ("heads", "kv"))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)


class SelfAttention(nnx.Module):
  """Multi-head self-attention through `jax.nn.dot_product_attention`, or the Pallas splash
  kernel (`attention_impl='splash'`, `polyglot.models.splash`)."""

  def __init__(self, d: int, h: int, *, attention_impl: str, dropout_rate: float,
               init_std: float, rngs: nnx.Rngs, dtype=jnp.float32):
    proj = dict(init_std=init_std, rngs=rngs, dtype=dtype)
    self.query = HeadProjection(d, h, **proj)
    self.key = HeadProjection(d, h, **proj)
    self.value = HeadProjection(d, h, **proj)
    self.out_kernel = layers.param(rngs, layers.normal(init_std), (h, d // h, d),
                                   ("heads", "kv", "embed"))
    self.out_bias = layers.param(rngs, layers.zeros, (d,), ("embed",))
    self.impl = attention_impl
    self.rate = dropout_rate
    self.dtype = dtype

  def __call__(self, x: jax.Array, segment_ids: jax.Array, rng: jax.Array | None) -> jax.Array:
    """x: [b, l, d], segment_ids: [b, l] (0: padding) -> [b, l, d]."""
    q, k, v = self.query(x), self.key(x), self.value(x)  # [b, l, h, k] each
    if rng is not None and self.rate > 0.0:
      y = self._attention_with_dropout(q, k, v, attention_mask(segment_ids), rng)
    elif self.impl == "splash":
      y = splash.attention(q, k, v, segment_ids)
    else:
      y = jax.nn.dot_product_attention(q, k, v, mask=attention_mask(segment_ids),
                                       implementation=self._impl())
    out = jnp.einsum("blhk,hkd->bld", y, self.out_kernel[...].astype(self.dtype))
    return out + self.out_bias[...].astype(self.dtype)

  def _impl(self) -> str | None:
    return "cudnn" if self.impl == "cudnn" else None

  def _attention_with_dropout(self, q, k, v, mask, rng):
    """Reference attention with dropout on the probabilities (HF's training path)."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("blhk,bmhk->bhlm", q, k).astype(jnp.float32) * scale
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = layers.dropout(jax.nn.softmax(logits, axis=-1), self.rate, rng)
    return jnp.einsum("bhlm,bmhk->blhk", probs.astype(v.dtype), v)


class Mlp(nnx.Module):
  """Dense feed-forward: [b, l, d] -> [b, l, d] through f = mlp_dim."""

  def __init__(self, d: int, f: int, *, init_std: float, rngs: nnx.Rngs, dtype=jnp.float32):
    self.wi = layers.Dense(d, f, ("embed", "mlp"), rngs=rngs, init_std=init_std, dtype=dtype)
    self.wo = layers.Dense(f, d, ("mlp", "embed"), rngs=rngs, init_std=init_std, dtype=dtype)

  def __call__(self, x: jax.Array, rng: jax.Array | None = None,
               token_mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
    del rng, token_mask  # HF applies dropout after the output projection, in the block.
    return self.wo(layers.gelu(self.wi(x))), {}


def make_feed_forward(cfg: EncoderConfig, layer: int, *, rngs: nnx.Rngs) -> nnx.Module:
  """The dense MLP, or an MoE block on the layers `cfg.moe` makes sparse."""
  if cfg.moe is not None and cfg.moe.is_moe_layer(layer):
    from polyglot.models import moe  # pylint: disable=g-import-not-at-top
    return moe.MoeFeedForward(cfg.hidden_size, cfg.moe.expert_mlp_dim or cfg.mlp_dim, cfg.moe,
                              init_std=cfg.initializer_range, rngs=rngs, dtype=cfg.dtype)
  return Mlp(cfg.hidden_size, cfg.mlp_dim, init_std=cfg.initializer_range, rngs=rngs,
             dtype=cfg.dtype)


class Block(nnx.Module):
  """Post-LN transformer block: x = LN(x + attn(x)); x = LN(x + ff(x))."""

  def __init__(self, cfg: EncoderConfig, layer: int, *, rngs: nnx.Rngs):
    self.attention = SelfAttention(
        cfg.hidden_size, cfg.num_heads, attention_impl=cfg.attention_impl,
        dropout_rate=cfg.attention_dropout_rate, init_std=cfg.initializer_range, rngs=rngs,
        dtype=cfg.dtype)
    self.attention_norm = layers.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, rngs=rngs,
                                           dtype=cfg.dtype)
    self.feed_forward = make_feed_forward(cfg, layer, rngs=rngs)
    self.output_norm = layers.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, rngs=rngs,
                                        dtype=cfg.dtype)
    self.rate = cfg.dropout_rate

  def __call__(self, x: jax.Array, segment_ids: jax.Array, rng: jax.Array | None,
               token_mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: [b, l, d], segment_ids: [b, l], token_mask: [b, l] (False on padding: MoE skips
    it) -> ([b, l, d], aux)."""
    r_attn, r_attn_out, r_ff, r_ff_out = layers.split_rng(rng, 4)
    y = layers.dropout(self.attention(x, segment_ids, r_attn), self.rate, r_attn_out)
    x = self.attention_norm(x + y)
    y, aux = self.feed_forward(x, r_ff, token_mask)
    x = self.output_norm(x + layers.dropout(y, self.rate, r_ff_out))
    return sharding.constrain(x, ACTIVATION_AXES), aux


def _remat_policy(name: str):
  return None if name == "full" else getattr(jax.checkpoint_policies, name)


def _sum_aux(a: dict[str, jax.Array], b: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}


def _draws(cfg: EncoderConfig, layer: int) -> int:
  """Keys that building block `layer` draws from the params stream (`layers.param`: one each)."""
  block = nnx.eval_shape(lambda: Block(cfg, layer, rngs=nnx.Rngs(0)))
  return len(jax.tree.leaves(nnx.state(block, nnx.Param)))


def _block_builder(cfg: EncoderConfig, layer: int, key: jax.Array):
  """count -> the block `layer` built from keys fold_in(key, count), fold_in(key, count + 1), ..."""
  def build(count: jax.Array) -> Block:
    rngs = nnx.Rngs(params=key)
    rngs.params.count[...] = count
    return Block(cfg, layer, rngs=rngs)
  return build


def stacked_blocks(cfg: EncoderConfig, rngs: nnx.Rngs) -> list[Block]:
  """The p = `cfg.layer_period` blocks of the scanned layout, each built once by `nnx.vmap`.

  Layer g * p + j draws the keys the per-layer loop gives it (the stream's
  count advanced past the layers before it), so a seed gives the same weights
  in both layouts, and initialisation too is traced once whatever the depth.
  """
  p, groups = cfg.layer_period, cfg.num_layers // cfg.layer_period
  stream = rngs.params
  key, start = stream.key[...], stream.count[...]
  draws = [_draws(cfg, j) for j in range(p)]
  blocks = []
  for j in range(p):
    counts = start + sum(draws[:j]) + sum(draws) * jnp.arange(groups, dtype=start.dtype)  # [L / p]
    build = nnx.vmap(_block_builder(cfg, j, key), transform_metadata=_LAYERS_METADATA)
    blocks.append(build(counts))
  stream.count[...] = start + groups * sum(draws)
  return blocks


def stack_layers(per_layer: dict[int, Any], period: int) -> dict[int, Any]:
  """Block parameters (pure dicts), per layer {i: ...} -> scanned {j: [L / period, ...]}."""
  n = len(per_layer)
  return {j: jax.tree.map(lambda *xs: np.stack(xs),
                          *(per_layer[i] for i in range(j, n, period)))
          for j in range(period)}


def unstack_layers(scanned: dict[int, Any], period: int) -> dict[int, Any]:
  """Block parameters (pure dicts), scanned {j: [L / period, ...]} -> per layer {i: ...}."""
  groups = len(jax.tree.leaves(scanned[0])[0])
  return {g * period + j: jax.tree.map(lambda x, g=g: x[g], scanned[j])
          for g in range(groups) for j in range(period)}


class Encoder(nnx.Module):
  """Embeddings and `num_layers` blocks: [b, l] ids -> EncoderOutput.

  `embeddings=False` builds the blocks alone, for a stack that reads another
  encoder's embeddings (the RTD generator, polyglot/models/rtd.py) through `blocks`.
  """

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, embeddings: bool = True):
    self.cfg = cfg
    self.embeddings = Embeddings(cfg, rngs=rngs) if embeddings else None
    self.layers = nnx.List(
        stacked_blocks(cfg, rngs) if cfg.scan_layers
        else [Block(cfg, i, rngs=rngs) for i in range(cfg.num_layers)])

  def __call__(self, input_ids: jax.Array, segment_ids: jax.Array | None = None,
               positions: jax.Array | None = None, token_type_ids: jax.Array | None = None, *,
               dropout_rng: jax.Array | None = None,
               output_hidden_states: bool = False) -> EncoderOutput:
    """Dropout is active iff `dropout_rng` is given (training)."""
    cfg = self.cfg
    if segment_ids is None or positions is None:
      segment_ids, positions = default_segments(input_ids, cfg.pad_id)
    keys = None if dropout_rng is None else jax.random.split(dropout_rng, cfg.num_layers + 1)
    x = self.embeddings(input_ids, segment_ids, positions, token_type_ids,
                        None if keys is None else keys[0])
    return self.blocks(x, segment_ids, None if keys is None else keys[1:],
                       output_hidden_states=output_hidden_states)

  def blocks(self, x: jax.Array, segment_ids: jax.Array, keys: jax.Array | None, *,
             output_hidden_states: bool = False) -> EncoderOutput:
    """The blocks on embedded inputs: x [b, l, d], segment_ids [b, l], keys [L] or None."""
    x = sharding.constrain(x, ACTIVATION_AXES)
    run = self._scan if self.cfg.scan_layers else self._loop
    last, hidden, aux = run(x, segment_ids, keys, segment_ids > 0, output_hidden_states)
    return EncoderOutput(last, (x, *hidden) if output_hidden_states else (), aux)

  def _loop(self, x, segment_ids, keys, token_mask,
            keep_hidden: bool) -> tuple[jax.Array, list[jax.Array], dict[str, jax.Array]]:
    """One block after the other; keys: [L] or None -> ([b, l, d], L x [b, l, d], aux)."""
    hidden, aux = [], {}
    for i, block in enumerate(self.layers):
      x, block_aux = self._apply_block(block, x, segment_ids,
                                       None if keys is None else keys[i], token_mask)
      aux = _sum_aux(aux, block_aux)
      hidden.append(x)
    return x, hidden if keep_hidden else [], aux

  def _scan(self, x, segment_ids, keys, token_mask,
            keep_hidden: bool) -> tuple[jax.Array, list[jax.Array], dict[str, jax.Array]]:
    """`jax.lax.scan` over groups of p blocks; keys: [L] or None; same outputs as `_loop`."""
    p = self.cfg.layer_period
    graphdef, state = nnx.split(self.layers)  # every leaf [L / p, ...]
    keys = None if keys is None else keys.reshape(-1, p)  # [L / p, p]: layer g * p + j at [g, j]

    def group(x, xs):
      state, keys = xs
      blocks = nnx.merge(graphdef, nnx.spmd.remove_axis(state, 0, _LAYERS_METADATA))
      hidden, aux = [], {}
      for j, block in enumerate(blocks):
        x, block_aux = self._apply_block(block, x, segment_ids,
                                         None if keys is None else keys[j], token_mask,
                                         prevent_cse=False)
        aux = _sum_aux(aux, block_aux)
        hidden.append(x)
      return x, (jnp.stack(hidden) if keep_hidden else None, aux)  # [p, b, l, d]

    x, (hidden, aux) = jax.lax.scan(group, x, (state, keys))
    aux = jax.tree.map(lambda a: a.sum(0), aux)  # [L / p, ...] -> [...]
    return x, list(hidden.reshape(-1, *x.shape)) if keep_hidden else [], aux

  def _apply_block(self, block: Block, x, segment_ids, rng, token_mask, *,
                   prevent_cse: bool = True) -> tuple[jax.Array, dict[str, Any]]:
    if self.cfg.remat == "none":
      return block(x, segment_ids, rng, token_mask)
    # Inside a scan the loop already keeps XLA from merging recomputation (jax.checkpoint).
    return nnx.remat(lambda b, *a: b(*a), policy=_remat_policy(self.cfg.remat),
                     prevent_cse=prevent_cse)(block, x, segment_ids, rng, token_mask)
