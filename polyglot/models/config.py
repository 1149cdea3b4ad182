"""Model configuration: one frozen dataclass per concern, validated on creation.

The default family (`xlmr`) is exactly Hugging Face's `XLMRobertaModel`:
post-LayerNorm blocks, learned positions offset by `pad_id + 1`, exact GELU,
an MLM decoder tied to the word embeddings with its own bias. Every dense
config converts losslessly to `XLMRobertaFor*` (see `polyglot/convert/hf.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from polyglot.errors import ConfigError

DTYPES = ("float32", "bfloat16")
# Names of `jax.checkpoint_policies` (or "none"/"full") accepted for `remat`.
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "nothing_saveable")
ATTENTION_IMPLS = ("xla", "cudnn", "splash")
MOE_DISPATCH = ("capacity", "dropless")


def _check(cond: bool, cls: str, name: str, value: Any, fix: str) -> None:
  if not cond:
    raise ConfigError(f"{cls}.{name}={value!r} is invalid: {fix}")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
  """Mixture-of-Experts feed-forward layers (GShard/Switch routing).

  `every_n_layers=2` replaces the MLP of layers 1, 3, 5, ... (0-based), as
  GShard and Switch do; 1 makes every layer sparse.
  """
  num_experts: int = 8
  top_k: int = 2
  every_n_layers: int = 2
  # Width f of each expert's MLP; None: the encoder's mlp_dim. mlp_dim / top_k gives
  # the active parameters of the dense layer it replaces (fine-grained experts).
  expert_mlp_dim: int | None = None
  dispatch: str = "capacity"          # "capacity" (einsum) or "dropless" (sorted blocks)
  capacity_factor_train: float = 1.25
  capacity_factor_eval: float = 2.0
  # Tokens per routing group; capacity is per group. Capacity dispatch and combine
  # cost 4 x group_size x top_k x capacity_factor x d FLOPs per token forward,
  # against 4 x top_k x d x f for the experts: group_size well below f keeps
  # routing cheap (measured in docs/benchmarks.md, Scaling).
  group_size: int = 1024
  min_capacity: int = 4
  router_z_loss_weight: float = 1e-3  # ST-MoE (Zoph et al., 2022), eq. 5
  load_balance_loss_weight: float = 1e-2  # Switch Transformer, eq. 4
  router_jitter: float = 0.0          # multiplicative input noise, training only
  expert_dropout: float = 0.0         # dropout inside experts, training only

  def __post_init__(self):
    c = "MoEConfig"
    _check(self.num_experts >= 2, c, "num_experts", self.num_experts, "use at least 2 experts")
    _check(self.top_k in (1, 2) and self.top_k <= self.num_experts, c, "top_k", self.top_k,
           "use 1 (Switch) or 2 (GShard)")
    _check(self.every_n_layers >= 1, c, "every_n_layers", self.every_n_layers, "use >= 1")
    _check(self.expert_mlp_dim is None or self.expert_mlp_dim >= 1, c, "expert_mlp_dim",
           self.expert_mlp_dim, "use a positive width, or None for the encoder's mlp_dim")
    _check(self.dispatch in MOE_DISPATCH, c, "dispatch", self.dispatch, f"use one of {MOE_DISPATCH}")
    for name in ("capacity_factor_train", "capacity_factor_eval"):
      _check(getattr(self, name) > 0, c, name, getattr(self, name), "use a positive factor")
    _check(self.group_size >= 1, c, "group_size", self.group_size, "use >= 1")
    _check(self.min_capacity >= 1, c, "min_capacity", self.min_capacity, "use >= 1")
    for name in ("router_z_loss_weight", "load_balance_loss_weight", "router_jitter"):
      _check(getattr(self, name) >= 0, c, name, getattr(self, name), "use a value >= 0")
    _check(0 <= self.expert_dropout < 1, c, "expert_dropout", self.expert_dropout,
           "use a rate in [0, 1)")

  def is_moe_layer(self, layer: int) -> bool:
    return layer % self.every_n_layers == self.every_n_layers - 1


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """An XLM-R-style encoder. Field names follow the paper; HF names in comments."""
  vocab_size: int = 250002            # vocab_size
  hidden_size: int = 768              # hidden_size
  num_layers: int = 12                # num_hidden_layers
  num_heads: int = 12                 # num_attention_heads
  mlp_dim: int = 3072                 # intermediate_size
  max_len: int = 512                  # max_position_embeddings - pad_id - 1
  type_vocab_size: int = 1            # type_vocab_size
  layer_norm_eps: float = 1e-5        # layer_norm_eps
  dropout_rate: float = 0.1           # hidden_dropout_prob
  attention_dropout_rate: float = 0.1  # attention_probs_dropout_prob
  initializer_range: float = 0.02     # initializer_range
  bos_id: int = 0
  pad_id: int = 1
  eos_id: int = 2
  dtype: str = "float32"              # compute dtype; parameters are always float32
  remat: str = "none"                 # a name in REMAT_POLICIES
  # jax.nn.dot_product_attention implementation ("cudnn": flash attention, GPU, bf16), or
  # "splash": Pallas splash attention, TPU (polyglot/models/splash.py). Attention dropout
  # needs the probabilities, so training with attention_dropout_rate > 0 takes the
  # explicit softmax path instead.
  attention_impl: str = "xla"
  # Stack the blocks' parameters and run them with one jax.lax.scan (MaxText's name):
  # compile time stays flat with depth. A layout choice only: the same seed gives
  # the same model either way (polyglot/models/encoder.py).
  scan_layers: bool = False
  moe: MoEConfig | None = None

  def __post_init__(self):
    c = "EncoderConfig"
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim",
                 "type_vocab_size"):
      _check(getattr(self, name) >= 1, c, name, getattr(self, name), "use a positive integer")
    _check(self.hidden_size % self.num_heads == 0, c, "num_heads", self.num_heads,
           f"hidden_size={self.hidden_size} must be divisible by num_heads")
    _check(self.max_len >= 3, c, "max_len", self.max_len, "use at least 3 (<s>, a token, </s>)")
    _check(self.layer_norm_eps > 0, c, "layer_norm_eps", self.layer_norm_eps, "use a value > 0")
    for name in ("dropout_rate", "attention_dropout_rate"):
      _check(0 <= getattr(self, name) < 1, c, name, getattr(self, name), "use a rate in [0, 1)")
    for name in ("bos_id", "pad_id", "eos_id"):
      _check(0 <= getattr(self, name) < self.vocab_size, c, name, getattr(self, name),
             f"use an id below vocab_size={self.vocab_size}")
    _check(self.dtype in DTYPES, c, "dtype", self.dtype, f"use one of {DTYPES}")
    _check(self.remat in REMAT_POLICIES, c, "remat", self.remat, f"use one of {REMAT_POLICIES}")
    _check(self.attention_impl in ATTENTION_IMPLS, c, "attention_impl", self.attention_impl,
           f"use one of {ATTENTION_IMPLS}")
    _check(self.attention_impl != "cudnn" or self.dtype == "bfloat16", c, "attention_impl",
           self.attention_impl, "cuDNN flash attention needs dtype='bfloat16'; use 'xla' for float32")
    _check(isinstance(self.scan_layers, bool), c, "scan_layers", self.scan_layers,
           "use True or False")
    _check(not self.scan_layers or self.num_layers % self.layer_period == 0, c, "num_layers",
           self.num_layers, f"scan_layers=True needs a multiple of moe.every_n_layers="
           f"{self.layer_period}; change num_layers or set scan_layers=False")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def layer_period(self) -> int:
    """Layers in the repeating unit of the stack: `moe.every_n_layers` for MoE, else 1."""
    return 1 if self.moe is None else self.moe.every_n_layers

  @property
  def num_positions(self) -> int:
    """Rows of the position table (HF `max_position_embeddings`): ids start at pad_id + 1."""
    return self.max_len + self.pad_id + 1

  @property
  def mask_id(self) -> int:
    """`<mask>` is the last id of an XLM-R vocabulary."""
    return self.vocab_size - 1

  def replace(self, **changes) -> EncoderConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ConfigError(f"unknown EncoderConfig fields {sorted(unknown)}; "
                        f"known: {[f.name for f in dataclasses.fields(cls)]}")
    if d.get("moe") is not None:
      d["moe"] = MoEConfig(**d["moe"])
    return cls(**d)


PRESETS: dict[str, EncoderConfig] = {
    # Tests: small enough for CPU, every feature exercised.
    "tiny": EncoderConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                          mlp_dim=128, max_len=128),
    # H256 L4 A4 I1024, vocab 8000: the CPU benchmark config.
    "small": EncoderConfig(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4,
                           mlp_dim=1024, max_len=512),
    # XLM-R (Conneau et al., 2020, table 7) and XLM-R XL (Goyal et al., 2021). base keeps
    # the per-layer layout of HF imports; the deep presets scan their layers.
    "base": EncoderConfig(),
    "large": EncoderConfig(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096,
                           scan_layers=True),
    "xl": EncoderConfig(hidden_size=2560, num_layers=36, num_heads=32, mlp_dim=10240,
                        scan_layers=True),
    # MoE variants: sparse MLP every other layer.
    "moe_tiny": EncoderConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                              mlp_dim=128, max_len=128,
                              moe=MoEConfig(num_experts=4, top_k=2, every_n_layers=2,
                                            group_size=256)),
    "moe_base_e8": EncoderConfig(moe=MoEConfig(num_experts=8, top_k=2)),
    "moe_large_e64": EncoderConfig(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096,
                                   scan_layers=True, moe=MoEConfig(num_experts=64, top_k=2)),
}


def preset(name: str, **overrides) -> EncoderConfig:
  """Returns the named preset, with fields replaced by `overrides`."""
  if name not in PRESETS:
    raise ConfigError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  fields = {f.name for f in dataclasses.fields(EncoderConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ConfigError(f"unknown model fields {unknown} for preset {name!r}; known: "
                      f"{sorted(fields)}")
  return PRESETS[name].replace(**overrides)
