"""`polyglot.load`: a checkpoint directory -> model, vocabulary, config, step, meta.

    model, vocab, cfg, step, meta = polyglot.load("workdir/demo")   # a `Loaded` NamedTuple
    ids = [vocab.bos_id, *vocab.encode("Habari ya dunia"), vocab.eos_id]
    logits, aux = model(jnp.asarray([ids]))

Everything comes from the checkpoint itself (DESIGN.md): the model kind and
config and the SentencePiece model are stored beside the parameters.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
from flax import nnx

from polyglot import checkpoint, models


class Loaded(NamedTuple):
  model: nnx.Module                  # parameters restored, ready to call
  vocab: Any                         # polyglot.data.vocab.Vocabulary
  config: models.EncoderConfig
  step: int
  meta: dict[str, Any]               # model kind, labels, operative gin config


def model_meta(reader: checkpoint.Checkpointer, step: int) -> dict[str, Any]:
  """The `meta` item of a model checkpoint's `step`: damaged unless it has a model_config."""
  meta = reader.read_meta(step)
  if not isinstance(meta.get("model_config"), dict):
    raise reader.damaged(step, ValueError("its meta item has no model_config"))
  return meta


# The objectives that train the MLM head (polyglot/objectives): without one of them (RTD
# alone) a masked_lm checkpoint's head is as initialised.
MLM_HEAD_OBJECTIVES = ("mlm", "tlm")


def mlm_head_trained(meta: dict[str, Any]) -> bool:
  """Whether a masked_lm checkpoint's MLM head was trained (checkpoints without an
  `objectives` record, imported or older, were MLM's)."""
  described = meta.get("objectives")
  return described is None or any(o.get("name") in MLM_HEAD_OBJECTIVES for o in described)


def build_from_meta(meta: dict[str, Any], rngs: nnx.Rngs) -> nnx.Module:
  """The (unrestored) model a checkpoint's metadata describes (with the RTD generator when
  it has a `generator_config`)."""
  cfg = models.EncoderConfig.from_dict(meta["model_config"])
  labels = meta.get("labels")
  generator = meta.get("generator_config")
  return models.build(meta.get("model_kind", "masked_lm"), cfg, rngs=rngs,
                      num_labels=len(labels) if labels else None,
                      generator=models.EncoderConfig.from_dict(generator) if generator else None)


def load(checkpoint_dir: str, step: int | None = None,
         sharding: jax.sharding.Sharding | None = None) -> Loaded:
  """Restores the newest (or `step`) checkpoint of a workdir or `checkpoints/` directory.

  Parameters land on `sharding` (default: the first device); the optimizer
  state is not read.
  """
  from polyglot.data.vocab import Vocabulary  # pylint: disable=g-import-not-at-top
  reader = checkpoint.Checkpointer(checkpoint.checkpoint_dir(checkpoint_dir), read_only=True)
  step = reader.resolve_step(step)
  meta = model_meta(reader, step)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_from_meta(meta, nnx.Rngs(0))))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        nnx.to_pure_dict(abstract))
  restored = reader.restore(target, step=step)
  model = nnx.merge(graphdef, restored.params)
  return Loaded(model, Vocabulary(restored.vocab),
                models.EncoderConfig.from_dict(meta["model_config"]), restored.step, meta)
