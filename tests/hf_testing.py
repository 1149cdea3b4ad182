"""Helpers of the Hugging Face interchange tests: tiny checkpoints without training.

Checkpoints are written directly with `Checkpointer.save`; every parameter
(LayerNorms and biases too) is perturbed, so a mapping that drops or swaps a
tensor changes the outputs.
"""
import importlib.util
import pathlib

import jax
import numpy as np
from flax import nnx

from polyglot import checkpoint, models
from polyglot.convert import hf

REPO = pathlib.Path(__file__).resolve().parents[1]


def random_params(kind: str, cfg: models.EncoderConfig, *, num_labels: int | None = None,
                  seed: int = 0, scale: float = 0.1) -> hf.Params:
  """A model's initial parameters plus `scale` x standard normal noise."""
  model = models.build(kind, cfg, rngs=nnx.Rngs(seed), num_labels=num_labels)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (x + scale * rng.standard_normal(x.shape)).astype(np.float32),
                      hf.params_of(model))


def save_checkpoint(workdir: pathlib.Path, kind: str, cfg: models.EncoderConfig, vocab, *,
                    params: hf.Params | None = None, labels: list[str] | None = None,
                    step: int = 7, seed: int = 0) -> hf.Params:
  """Writes `params` (default: random ones) as `workdir/checkpoints/<step>`; returns them."""
  if params is None:
    params = random_params(kind, cfg, num_labels=len(labels) if labels else None, seed=seed)
  meta = {"model_kind": kind, "model_config": cfg.to_dict(), "gin_config": ""}
  if labels:
    meta["labels"] = labels
  writer = checkpoint.Checkpointer(str(workdir / checkpoint.SUBDIR),
                                   checkpoint.CheckpointConfig(async_save=False))
  writer.save(step, params=params, opt_state={"step": np.int32(step)},
              vocab=vocab.model_bytes, meta=meta, data=None)
  writer.wait()
  writer.close()
  return params


def tool(name: str):
  """The module of `tools/<name>.py`, to run its CLI in this process."""
  spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_tool(name: str, *args: str) -> int:
  """Runs `tools/<name>.py args` in this process; returns its exit code."""
  try:
    return tool(name).main(list(args))
  except SystemExit as e:  # argparse
    return int(e.code)


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def batch(vocab, texts: list[str], width: int) -> np.ndarray:
  """Rows `<s> pieces </s>` cut to `width`, then `<pad>`: int32 [len(texts), width]."""
  ids = np.full((len(texts), width), vocab.pad_id, np.int32)
  for r, text in enumerate(texts):
    row = [vocab.bos_id, *vocab.encode(text)][:width - 1] + [vocab.eos_id]
    ids[r, :len(row)] = row
  return ids
