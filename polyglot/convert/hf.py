"""Parameters and configs to and from Hugging Face `XLMRobertaFor*`.

A name-mapping table plus small value transforms (MaxText's `param_mapping`),
on plain numpy arrays: torch is needed only to produce or load HF models, not
here. polyglot parameters are nested dicts as `nnx.to_pure_dict` gives them
(`{"encoder": {"layers": {0: {...}}}}`); HF's are flat state dicts.

Every transform is a transpose or a reshape, so both directions are exact:
HF -> polyglot -> HF returns bit-identical tensors.

The table names the per-layer layout (`encoder/layers/{i}/...`). A config with
`scan_layers=True` stores the blocks stacked (polyglot/models/encoder.py);
`to_hf` unstacks them before the table is applied and `from_hf` stacks them
after, so the table stays the one source of names.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from polyglot import models
from polyglot.errors import ConfigError, ConversionError
from polyglot.models import encoder
from polyglot.models.config import EncoderConfig

Params = dict[Any, Any]
StateDict = dict[str, np.ndarray]

# In the order `detect_head` tries them: a multiple-choice state dict also holds the
# names of a token classifier's.
HEADS = ("masked_lm", "sequence_classification", "multiple_choice", "token_classification",
         "question_answering")
HF_ARCHITECTURES = {
    "masked_lm": "XLMRobertaForMaskedLM",
    "sequence_classification": "XLMRobertaForSequenceClassification",
    "multiple_choice": "XLMRobertaForMultipleChoice",
    "token_classification": "XLMRobertaForTokenClassification",
    "question_answering": "XLMRobertaForQuestionAnswering",
}
# HF keys that hold no parameter of their own: the MLM decoder is tied to the
# word embeddings and its bias to `lm_head.bias`; the pooler is unused by every
# XLMRobertaFor* head but multiple choice's.
TIED = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias"}
IGNORED_PREFIXES = ("roberta.pooler.",)
# A classifier's output bias: its length is the label count.
LABEL_BIASES = {"sequence_classification": "classifier.out_proj.bias",
                "token_classification": "classifier.bias"}
# Buffers, not parameters, that older transformers versions saved with the weights.
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class Transform:
  """A pair of exact value maps, HF layout <-> polyglot layout."""

  def __init__(self, to_ours: Callable[[np.ndarray, EncoderConfig], np.ndarray],
               to_hf: Callable[[np.ndarray, EncoderConfig], np.ndarray]):
    self.to_ours, self.to_hf = to_ours, to_hf


IDENTITY = Transform(lambda x, c: x, lambda x, c: x)
# torch Linear stores [out, in]; polyglot stores [in, out].
LINEAR = Transform(lambda x, c: x.T, lambda x, c: x.T)
# query/key/value: HF [h*k, d] <-> ours [d, h, k].
QKV_KERNEL = Transform(lambda x, c: x.T.reshape(c.hidden_size, c.num_heads, c.head_dim),
                       lambda x, c: x.reshape(c.hidden_size, -1).T)
QKV_BIAS = Transform(lambda x, c: x.reshape(c.num_heads, c.head_dim), lambda x, c: x.reshape(-1))
# attention output: HF [d, h*k] <-> ours [h, k, d].
OUT_KERNEL = Transform(lambda x, c: x.T.reshape(c.num_heads, c.head_dim, c.hidden_size),
                       lambda x, c: x.reshape(-1, c.hidden_size).T)

EMBEDDINGS = (
    ("encoder/embeddings/word", "roberta.embeddings.word_embeddings.weight", IDENTITY),
    ("encoder/embeddings/position", "roberta.embeddings.position_embeddings.weight", IDENTITY),
    ("encoder/embeddings/token_type", "roberta.embeddings.token_type_embeddings.weight",
     IDENTITY),
    ("encoder/embeddings/norm/scale", "roberta.embeddings.LayerNorm.weight", IDENTITY),
    ("encoder/embeddings/norm/bias", "roberta.embeddings.LayerNorm.bias", IDENTITY),
)
LAYER = (
    *((f"attention/{n}/kernel", f"attention.self.{n}.weight", QKV_KERNEL)
      for n in ("query", "key", "value")),
    *((f"attention/{n}/bias", f"attention.self.{n}.bias", QKV_BIAS)
      for n in ("query", "key", "value")),
    ("attention/out_kernel", "attention.output.dense.weight", OUT_KERNEL),
    ("attention/out_bias", "attention.output.dense.bias", IDENTITY),
    ("attention_norm/scale", "attention.output.LayerNorm.weight", IDENTITY),
    ("attention_norm/bias", "attention.output.LayerNorm.bias", IDENTITY),
    ("feed_forward/wi/kernel", "intermediate.dense.weight", LINEAR),
    ("feed_forward/wi/bias", "intermediate.dense.bias", IDENTITY),
    ("feed_forward/wo/kernel", "output.dense.weight", LINEAR),
    ("feed_forward/wo/bias", "output.dense.bias", IDENTITY),
    ("output_norm/scale", "output.LayerNorm.weight", IDENTITY),
    ("output_norm/bias", "output.LayerNorm.bias", IDENTITY),
)
HEAD_PARAMS = {
    "masked_lm": (
        ("lm_head/dense/kernel", "lm_head.dense.weight", LINEAR),
        ("lm_head/dense/bias", "lm_head.dense.bias", IDENTITY),
        ("lm_head/norm/scale", "lm_head.layer_norm.weight", IDENTITY),
        ("lm_head/norm/bias", "lm_head.layer_norm.bias", IDENTITY),
        ("lm_head/bias", "lm_head.bias", IDENTITY),
    ),
    "sequence_classification": (
        ("classifier/dense/kernel", "classifier.dense.weight", LINEAR),
        ("classifier/dense/bias", "classifier.dense.bias", IDENTITY),
        ("classifier/out_proj/kernel", "classifier.out_proj.weight", LINEAR),
        ("classifier/out_proj/bias", "classifier.out_proj.bias", IDENTITY),
    ),
    # HF's pooler (dense, tanh on <s>) and one-output classifier compute what the <s> head
    # (`SequenceClassificationHead`: dense, tanh, projection) does, dropout aside.
    "multiple_choice": (
        ("classifier/dense/kernel", "roberta.pooler.dense.weight", LINEAR),
        ("classifier/dense/bias", "roberta.pooler.dense.bias", IDENTITY),
        ("classifier/out_proj/kernel", "classifier.weight", LINEAR),
        ("classifier/out_proj/bias", "classifier.bias", IDENTITY),
    ),
    "token_classification": (
        ("classifier/classifier/kernel", "classifier.weight", LINEAR),
        ("classifier/classifier/bias", "classifier.bias", IDENTITY),
    ),
    "question_answering": (
        ("qa_head/qa_outputs/kernel", "qa_outputs.weight", LINEAR),
        ("qa_head/qa_outputs/bias", "qa_outputs.bias", IDENTITY),
    ),
    "encoder": (),
}


def _path(template: str) -> tuple[Any, ...]:
  return tuple(int(p) if p.isdigit() else p for p in template.split("/"))


def mapping(cfg: EncoderConfig, head: str) -> list[tuple[tuple[Any, ...], str, Transform]]:
  """(polyglot path, HF name, transform) for every parameter of a model with `head`.

  `head="encoder"` maps the bare encoder (HF names keep the `roberta.` prefix).
  Paths are in the per-layer layout whatever `cfg.scan_layers` says (`per_layer`).
  """
  if head not in HEAD_PARAMS:
    raise ConversionError(f"unknown head {head!r}; known: {[*HEADS, 'encoder']}")
  if cfg.moe is not None:
    raise ConversionError("an MoE encoder has no Hugging Face transformers class; "
                          "only dense checkpoints convert to XLMRobertaFor*")
  rows = [(_path(p), h, t) for p, h, t in EMBEDDINGS]
  for i in range(cfg.num_layers):
    rows += [(_path(f"encoder/layers/{i}/{p}"), f"roberta.encoder.layer.{i}.{h}", t)
             for p, h, t in LAYER]
  rows += [(_path(p), h, t) for p, h, t in HEAD_PARAMS[head]]
  return rows


def _get(tree: Mapping[Any, Any], path: tuple[Any, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict[Any, Any], path: tuple[Any, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _with_layers(params: Params, layers: dict[int, Any]) -> Params:
  """A shallow copy of `params` with `encoder/layers` replaced."""
  return {**params, "encoder": {**params["encoder"], "layers": layers}}


def per_layer(params: Params, cfg: EncoderConfig) -> Params:
  """Parameters in the per-layer layout of the mapping table: scanned blocks unstacked."""
  if not cfg.scan_layers:
    return params
  layers = params.get("encoder", {}).get("layers", {})
  groups = cfg.num_layers // cfg.layer_period
  if (sorted(layers) != list(range(cfg.layer_period))
      or any(np.shape(x)[:1] != (groups,) for x in jax.tree.leaves(layers))):
    raise ConversionError(f"parameters are not in the scan_layers=True layout (encoder/layers/"
                          f"{{j}} for j < {cfg.layer_period}, each [{groups}, ...]); pass the "
                          "config the model was built with")
  return _with_layers(params, encoder.unstack_layers(layers, cfg.layer_period))


def to_model_layout(params: Params, cfg: EncoderConfig) -> Params:
  """Parameters in the per-layer layout -> the layout `cfg` builds (stacked if scanned)."""
  if not cfg.scan_layers:
    return params
  return _with_layers(params, encoder.stack_layers(params["encoder"]["layers"],
                                                   cfg.layer_period))


def to_hf(params: Params, cfg: EncoderConfig, head: str) -> StateDict:
  """polyglot parameters -> HF state dict (tied MLM decoder entries included)."""
  rows = mapping(cfg, head)
  params = per_layer(params, cfg)
  state = {}
  for path, name, transform in rows:
    try:
      value = np.asarray(_get(params, path))
    except KeyError as e:
      raise ConversionError(f"parameter {'/'.join(map(str, path))} is missing; is the model "
                            f"a {head} model of this config?") from e
    state[name] = np.ascontiguousarray(transform.to_hf(value, cfg))
  if head == "masked_lm":
    state.update({tied: state[source] for tied, source in TIED.items()})
  return state


def normalize_names(state: Mapping[str, np.ndarray]) -> StateDict:
  """Adds the `roberta.` prefix of a bare `XLMRobertaModel` state dict."""
  bare = not any(k.startswith("roberta.") for k in state)
  return {(f"roberta.{k}" if bare and k.startswith(("embeddings.", "encoder.", "pooler."))
           else k): v for k, v in state.items()}


def detect_head(state: Mapping[str, np.ndarray]) -> str:
  """The head a (normalised) HF state dict carries, or "encoder" for none."""
  for head in HEADS:
    if all(h in state for _, h, _ in HEAD_PARAMS[head]):
      return head
  return "encoder"


def from_hf(state: Mapping[str, np.ndarray], cfg: EncoderConfig, head: str, *,
            num_labels: int | None = None, origins: Mapping[str, str] | None = None
            ) -> Params:
  """HF state dict -> polyglot parameters in the layout of `cfg` (stacked if `scan_layers`).

  Every expected tensor must be there with the shape `cfg` gives it, checked before any
  reshape; a classifier has `num_labels` labels, or as many as its weights hold. `origins`
  names the file each tensor came from, for the errors.
  """
  state = normalize_names(state)
  rows = mapping(cfg, head)
  for _, name, _ in rows:
    if name not in state:
      raise ConversionError(f"HF tensor {name} is missing; the weights do not hold a {head} "
                            f"model (found head: {detect_head(state)})")
  _check_shapes(state, expected_shapes(cfg, head, num_labels or _num_labels(state, head)),
                normalize_names(origins or {}))
  params: Params = {}
  for path, name, transform in rows:
    _set(params, path, transform.to_ours(np.asarray(state[name]), cfg))
  _check_tied(state, head)
  expected = {h for _, h, _ in rows}
  unused = sorted(k for k in state if k not in expected and k not in TIED
                  and not k.startswith(IGNORED_PREFIXES) and not k.endswith(BUFFERS)
                  and _head_of(k) is None)
  if unused:
    raise ConversionError(f"HF tensors {unused[:5]} have no polyglot counterpart; "
                          "is this an XLM-R checkpoint of the given config?")
  return to_model_layout(params, cfg)


def expected_shapes(cfg: EncoderConfig, head: str, num_labels: int | None = None
                    ) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> the shape a `head` model of `cfg` (with `num_labels`) gives it."""
  rows = mapping(cfg, head)
  kind = "masked_lm" if head == "encoder" else head  # its encoder rows are the bare encoder's
  model = nnx.eval_shape(lambda: models.build(kind, cfg.replace(scan_layers=False),
                                              rngs=nnx.Rngs(0), num_labels=num_labels))
  ours = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return {name: jax.eval_shape(lambda x, t=transform: t.to_hf(x, cfg), _get(ours, path)).shape
          for path, name, transform in rows}


def _num_labels(state: Mapping[str, np.ndarray], head: str) -> int | None:
  """A classifier's label count as its weights hold it (the length of its output bias)."""
  bias = LABEL_BIASES.get(head)
  return max(1, int(np.size(state[bias]))) if bias else None


def _head_of(name: str) -> str | None:
  """The head an HF tensor belongs to; None for encoder and unknown tensors."""
  for head, rows in HEAD_PARAMS.items():
    if any(name == h for _, h, _ in rows):
      return head
  return None


def _check_tied(state: Mapping[str, np.ndarray], head: str) -> None:
  if head != "masked_lm":
    return
  for tied, source in TIED.items():
    if tied in state and not np.array_equal(np.asarray(state[tied]), np.asarray(state[source])):
      raise ConversionError(f"HF tensor {tied} differs from {source}; polyglot's MLM decoder "
                            "is tied to the word embeddings (untied decoders are unsupported)")


def _check_shapes(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                  origins: Mapping[str, str]) -> None:
  for name, want in expected.items():
    got = np.shape(state[name])
    if got != want:
      where = f" in {origins[name]}" if name in origins else ""
      raise ConversionError(f"HF tensor {name}{where} has shape {got}, the config expects "
                            f"{want}: fix the config (config.json: sizes, id2label) to match "
                            "the weights")


def architecture(head: str) -> str:
  """The transformers class of a model with `head` ("encoder": the bare XLMRobertaModel)."""
  return HF_ARCHITECTURES.get(head, "XLMRobertaModel")


def config_to_hf(cfg: EncoderConfig, head: str = "masked_lm",
                 id2label: Mapping[int, str] | None = None) -> dict[str, Any]:
  """`XLMRobertaConfig` keyword arguments; XLM-R's real values written explicitly
  (HF's class defaults differ: layer_norm_eps 1e-12, type_vocab_size 2, 512 positions)."""
  if cfg.moe is not None:
    raise ConversionError("an MoE encoder has no Hugging Face transformers class; "
                          "only dense checkpoints convert to XLMRobertaFor*")
  out = dict(
      model_type="xlm-roberta", architectures=[architecture(head)],
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      intermediate_size=cfg.mlp_dim, hidden_act="gelu",
      hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=cfg.attention_dropout_rate,
      max_position_embeddings=cfg.num_positions, type_vocab_size=cfg.type_vocab_size,
      initializer_range=cfg.initializer_range, layer_norm_eps=cfg.layer_norm_eps,
      pad_token_id=cfg.pad_id, bos_token_id=cfg.bos_id, eos_token_id=cfg.eos_id,
      position_embedding_type="absolute", classifier_dropout=None, tie_word_embeddings=True)
  if id2label is not None:
    out["id2label"] = {int(i): str(l) for i, l in id2label.items()}
    out["label2id"] = {str(l): int(i) for i, l in id2label.items()}
  return out


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


_COUNT = (lambda v: _is_int(v) and v >= 1, "a positive integer")
_ID = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
_RATE = (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)")
_EPS = (lambda v: _is_real(v) and v > 0, "a number > 0")
_STD = (lambda v: _is_real(v) and v >= 0, "a number >= 0")
# The config.json fields polyglot reads: name -> (default, None when required; valid values).
HF_CONFIG_FIELDS = {
    "vocab_size": (None, _COUNT), "hidden_size": (None, _COUNT),
    "num_hidden_layers": (None, _COUNT), "num_attention_heads": (None, _COUNT),
    "intermediate_size": (None, _COUNT), "max_position_embeddings": (None, _COUNT),
    "type_vocab_size": (1, _COUNT), "layer_norm_eps": (1e-5, _EPS),
    "hidden_dropout_prob": (0.1, _RATE), "attention_probs_dropout_prob": (0.1, _RATE),
    "initializer_range": (0.02, _STD),
    "bos_token_id": (0, _ID), "pad_token_id": (1, _ID), "eos_token_id": (2, _ID),
}


def _config_fields(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
  """The `HF_CONFIG_FIELDS` of `hf`, defaults filled in; a ConversionError names the first one
  that is missing or invalid in `source` (the file, for the message)."""
  values = {}
  for name, (default, (valid, rule)) in HF_CONFIG_FIELDS.items():
    if name not in hf and default is None:
      raise ConversionError(f"{source} lacks {name!r}: is it an XLM-R config.json? add the "
                            "field as save_pretrained writes it")
    value = hf.get(name, default)
    if not valid(value):
      raise ConversionError(f"{source} field {name}={value!r} is invalid: use {rule}")
    values[name] = value
  return values


def config_from_hf(hf: Mapping[str, Any], *, source: str = "the HF config",
                   **overrides) -> EncoderConfig:
  """An `EncoderConfig` from an HF config dict (`config.json`, named `source` in errors);
  refuses what XLM-R is not and fields of the wrong type or range."""
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ConversionError(f"{source} has hidden_act={hf['hidden_act']!r}, which is "
                          "unsupported; polyglot's xlmr family uses exact GELU ('gelu')")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ConversionError(f"{source} has position_embedding_type="
                          f"{hf['position_embedding_type']!r}, which is unsupported; use "
                          "'absolute' (XLM-R)")
  f = _config_fields(hf, source)
  if f["max_position_embeddings"] < f["pad_token_id"] + 4:
    raise ConversionError(f"{source} field max_position_embeddings="
                          f"{f['max_position_embeddings']} is invalid: positions start after "
                          f"pad_token_id={f['pad_token_id']}, so use at least "
                          f"{f['pad_token_id'] + 4} (XLM-R: 514)")
  try:
    return EncoderConfig(
        vocab_size=f["vocab_size"], hidden_size=f["hidden_size"],
        num_layers=f["num_hidden_layers"], num_heads=f["num_attention_heads"],
        mlp_dim=f["intermediate_size"],
        max_len=f["max_position_embeddings"] - f["pad_token_id"] - 1,
        type_vocab_size=f["type_vocab_size"], layer_norm_eps=float(f["layer_norm_eps"]),
        dropout_rate=float(f["hidden_dropout_prob"]),
        attention_dropout_rate=float(f["attention_probs_dropout_prob"]),
        initializer_range=float(f["initializer_range"]),
        bos_id=f["bos_token_id"], pad_id=f["pad_token_id"], eos_id=f["eos_token_id"],
        **overrides)
  except ConfigError as e:
    raise ConversionError(f"{source} describes no valid model ({e}): fix the file") from None


def params_of(model: Any) -> Params:
  """An NNX model's parameters as a nested dict of numpy arrays."""
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def load_params(model: Any, params: Params) -> None:
  """Replaces an NNX model's parameters in place; the tree must match exactly."""
  state = nnx.state(model, nnx.Param)
  ours = nnx.to_pure_dict(state)
  if jax.tree.structure(ours) != jax.tree.structure(params):
    raise ConversionError("parameter tree does not match the model; was it converted for "
                          "the same config and head?")
  for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(ours),
                              jax.tree.leaves(params)):
    if old.shape != np.shape(new):
      raise ConversionError(f"parameter {jax.tree_util.keystr(path)} has shape "
                            f"{np.shape(new)}, the model expects {old.shape}")
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: np.asarray(x, np.float32), params))
  nnx.update(model, state)

