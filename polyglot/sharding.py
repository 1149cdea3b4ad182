"""The device mesh, the logical-axis rules, and the shardings derived from them.

Shapes: b=batch, l=length, d=embed, e=experts.

Parameters and activations are annotated with logical names only
(`LOGICAL_AXES`); this module is the one place that maps them to the mesh axes
`data, fsdp, tensor, expert`. Changing a parallel layout means changing the
mesh shape (`MeshConfig`) or the rules table, never the model.

How a logical spec becomes a `PartitionSpec` (`logical_to_spec`):
- each logical name maps through the rules to zero or more mesh axes;
- a mesh axis shards at most one dimension of an array: earlier dimensions
  claim it first, so `("expert", "batch", ...)` puts the experts on `expert`
  and the groups on the remaining batch axes `data, fsdp`;
- where the array's shape is known, a dimension keeps the longest prefix of
  its mesh axes whose product divides it and is replicated over the rest
  (an XLM-R vocabulary of 250002 rows over `tensor=4` stays whole);
  `state_shardings` logs each such fallback and `batch_shardings` refuses it.

The rules are read when a function is traced, from the context that
`use_mesh(mesh, rules)` sets (`jax.set_mesh` and flax's
`nnx.logical_axis_rules`); a function traced under one table keeps it.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import optax
from flax import linen as nn
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from polyglot.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor", "expert")
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv", "mlp", "vocab", "expert", "layers")
# Mesh axes that may span the slow links between slices or hosts (data-parallel
# gradient reductions and FSDP gathers tolerate DCN; tensor and expert
# all-to-alls do not: MaxText's multi-slice guidance).
DCN_AXES = ("data", "fsdp")
BATCH_AXES = ("batch", "length")
# Accelerators a mesh may be meant for (`MeshConfig.platform`); JAX calls CUDA and ROCm
# devices "gpu" (its own alias table, `xla_bridge._platform_aliases`).
PLATFORMS = ("gpu", "tpu")
_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]
LogicalAxes = Sequence[str | None]

# Logical name -> mesh axis (or axes), each logical name once (MaxText-style).
# FSDP shards weights along `embed`; tensor parallelism splits heads, MLP and
# vocabulary (Megatron); experts live on their own axis (GShard), which also
# splits the batch outside the expert layers. The stacked axis of scanned blocks
# (`EncoderConfig.scan_layers`) stays whole: each scan step reads one layer.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("expert", "expert"),
    ("layers", None),
)

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Mesh


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape over `MESH_AXES`: the sizes within a slice, times `dcn_shape` slices.

  One of `data, fsdp, tensor, expert` may be -1: it takes the devices the
  others leave. `dcn_shape` (same axis order) counts slices (TPU) or hosts
  (GPU) along each axis; only `data` and `fsdp` may cross them. `platform` is
  the accelerator the layout is meant for ("gpu" or "tpu"; None: any devices):
  `make_mesh` refuses other devices, so a CPU-only JAX fails at once.
  """
  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  expert: int = 1
  dcn_shape: tuple[int, int, int, int] = (1, 1, 1, 1)
  platform: str | None = None

  def __post_init__(self):
    c = "MeshConfig"
    for name in MESH_AXES:
      value = getattr(self, name)
      if not isinstance(value, int) or (value < 1 and value != -1):
        raise ConfigError(f"{c}.{name}={value!r} is invalid: use a positive size or -1 "
                          "(fill the devices the other axes leave)")
    if self.ici_shape.count(-1) > 1:
      raise ConfigError(f"{c} has -1 on several axes {self.ici_shape}: at most one axis "
                        "may be -1; give the others explicit sizes")
    dcn = tuple(self.dcn_shape)
    if len(dcn) != len(MESH_AXES) or any(not isinstance(s, int) or s < 1 for s in dcn):
      raise ConfigError(f"{c}.dcn_shape={self.dcn_shape!r} is invalid: use {len(MESH_AXES)} "
                        f"positive sizes in the order {MESH_AXES}")
    for name, size in zip(MESH_AXES, dcn):
      if name not in DCN_AXES and size != 1:
        raise ConfigError(f"{c}.dcn_shape={self.dcn_shape!r} is invalid: {name} must stay "
                          f"inside a slice; put slices on {DCN_AXES} and set {name} to 1")
    if self.platform is not None and self.platform not in PLATFORMS:
      raise ConfigError(f"{c}.platform={self.platform!r} is invalid: use one of {PLATFORMS}, "
                        "or None to run on any devices")

  @property
  def ici_shape(self) -> tuple[int, ...]:
    return tuple(getattr(self, name) for name in MESH_AXES)

  def resolved_ici_shape(self, devices_per_slice: int) -> tuple[int, ...]:
    """The shape within a slice, -1 filled in; a clear error if it cannot fit."""
    known = math.prod(s for s in self.ici_shape if s != -1)
    shape = tuple(devices_per_slice // known if s == -1 else s for s in self.ici_shape)
    if math.prod(shape) != devices_per_slice or devices_per_slice % known:
      raise ConfigError(
          f"MeshConfig{dict(zip(MESH_AXES, self.ici_shape))} does not fit "
          f"{devices_per_slice} devices per slice: make the product of the sizes equal "
          f"{devices_per_slice}, or set one axis to -1 to take the rest")
    return shape


def _hosts_are_slices(devices: Sequence[jax.Device]) -> bool:
  """TPU slices carry `slice_index`; elsewhere (GPU clusters, CPU) a host is the unit."""
  return len({getattr(d, "slice_index", None) for d in devices}) > 1


def _platform(device: jax.Device) -> str:
  return _PLATFORM_ALIASES.get(device.platform, device.platform)


def check_platform(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> None:
  """Refuses `devices` (default: all) of another platform than `cfg.platform`, if set.

  Entry points call it before they write anything; `make_mesh` calls it too.
  """
  if cfg.platform is None:
    return
  found = sorted({_platform(d) for d in (jax.devices() if devices is None else devices)})
  if found != [cfg.platform]:
    raise ConfigError(
        f"MeshConfig.platform={cfg.platform!r} but this process sees only {', '.join(found)} "
        f"devices: install JAX's {cfg.platform} build (make install ACCEL={cfg.platform}, see "
        "README) or pass --gin.MeshConfig.platform=None to run on these devices")


def describe_devices() -> str:
  """One log line: the backend and this process's devices by kind, e.g.
  'backend gpu: 8 x NVIDIA H100 80GB HBM3 (process 0 of 1)'."""
  kinds = collections.Counter(d.device_kind for d in jax.local_devices())
  devices = ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
  where = f"process {jax.process_index()} of {jax.process_count()}"
  if jax.process_count() > 1:
    where += f", {jax.device_count()} devices in all"
  return f"backend {jax.default_backend()}: {devices} ({where})"


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with Auto axis types over `devices` (default: all), ICI x DCN if sliced."""
  devices = list(jax.devices() if devices is None else devices)
  check_platform(cfg, devices)
  num_slices = math.prod(cfg.dcn_shape)
  if len(devices) % num_slices:
    raise ConfigError(f"MeshConfig.dcn_shape={cfg.dcn_shape} asks for {num_slices} slices, "
                      f"which do not divide {len(devices)} devices; use a divisor")
  ici = cfg.resolved_ici_shape(len(devices) // num_slices)
  if num_slices == 1:
    grid = mesh_utils.create_device_mesh(ici, devices)
  else:
    try:
      grid = mesh_utils.create_hybrid_device_mesh(
          ici, cfg.dcn_shape, devices, process_is_granule=not _hosts_are_slices(devices))
    except ValueError as e:
      raise ConfigError(f"MeshConfig.dcn_shape={cfg.dcn_shape} does not match the slices or "
                        f"hosts of these {len(devices)} devices ({e}); make its product the "
                        "number of slices (TPU) or processes (GPU, CPU)") from e
  # Auto axes: `jax.make_mesh` would make them Explicit (see STACK-NOTES).
  return Mesh(grid, MESH_AXES)


# ---------------------------------------------------------------------------
# Rules and logical specs


def check_rules(rules: Rules) -> None:
  """Each known logical name at most once, mapped to known mesh axes."""
  seen = set()
  for name, target in rules:
    if name not in LOGICAL_AXES or name in seen:
      raise ConfigError(f"logical axis rule for {name!r} is invalid: name each of "
                        f"{LOGICAL_AXES} at most once")
    seen.add(name)
    for axis in _mesh_axes(target):
      if axis not in MESH_AXES:
        raise ConfigError(f"logical axis rule {name!r} -> {target!r} is invalid: map to "
                          f"mesh axes among {MESH_AXES} or None")


def _mesh_axes(target: str | tuple[str, ...] | None) -> tuple[str, ...]:
  if target is None:
    return ()
  return (target,) if isinstance(target, str) else tuple(target)


def _fit(axes: tuple[str, ...], dim: int, sizes: dict[str, int]) -> tuple[str, ...]:
  """The longest prefix of `axes` whose total size divides `dim`."""
  for n in range(len(axes), 0, -1):
    if dim % math.prod(sizes[a] for a in axes[:n]) == 0:
      return axes[:n]
  return ()


def logical_to_spec(axes: LogicalAxes, rules: Rules, shape: Sequence[int] | None = None,
                    mesh: Mesh | jax.sharding.AbstractMesh | None = None) -> PartitionSpec:
  """Logical names -> PartitionSpec; with `shape` and `mesh`, only dividing axes are kept."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(axes):
    if name is not None and name not in LOGICAL_AXES:
      raise ConfigError(f"logical axis {name!r} is unknown; use one of {LOGICAL_AXES}")
    mesh_axes = tuple(a for a in _mesh_axes(table.get(name)) if a not in used)
    if shape is not None and mesh is not None:
      mesh_axes = _fit(mesh_axes, shape[i], dict(mesh.shape))
    used.update(mesh_axes)
    spec.append(mesh_axes[0] if len(mesh_axes) == 1 else (mesh_axes or None))
  return PartitionSpec(*spec)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
  """Sets the mesh and the rules for tracing: `constrain` takes effect inside."""
  check_rules(rules)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(rules)):
    yield


def constrain(x: jax.Array, axes: LogicalAxes) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `use_mesh`."""
  rules, mesh = nn.get_logical_axis_rules(), jax.sharding.get_abstract_mesh()
  if not rules or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, rules, x.shape, mesh))


# ---------------------------------------------------------------------------
# Shardings of model state, optimizer state and batches


def _variable_sharding(v: nnx.Variable, mesh: Mesh, rules: Rules) -> nnx.Variable:
  axes = v.get_metadata().get("out_sharding") or (None,) * len(v.shape)
  spec = logical_to_spec(axes, rules, v.shape, mesh)
  if spec != logical_to_spec(axes, rules):
    _log.warning("parameter %s %s does not divide the mesh %s: sharded as %s",
                 axes, tuple(v.shape), dict(mesh.shape), spec)
  return v.replace(NamedSharding(mesh, spec))


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.State:
  """NamedShardings for an (abstract) model state, from its logical-axis metadata.

  The result mirrors `state` (Variables holding NamedShardings), so it can be
  a `jax.jit` in/out sharding for the state; `nnx.to_pure_dict` of it matches
  `nnx.to_pure_dict(state)`.
  """
  check_rules(rules)
  return jax.tree.map(lambda v: _variable_sharding(v, mesh, rules), state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))


def optimizer_shardings(tx: optax.GradientTransformation, opt_state: Any, param_shardings: Any,
                        mesh: Mesh) -> Any:
  """Optimizer-state shardings: moments follow their parameters, the rest is replicated.

  `opt_state` may be abstract (`jax.eval_shape(tx.init, params)`);
  `param_shardings` mirrors the params that `tx` was initialised with.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  return optax.tree_map_params(tx, lambda _, sharding: sharding, opt_state, param_shardings,
                               transform_non_params=lambda _: replicated)


def batch_shardings(batch: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """Shardings for a batch pytree of [b, l, ...] arrays (or shapes): `("batch", "length")`.

  Unlike parameters, a batch that does not divide its mesh axes is an error.
  """
  check_rules(rules)

  def sharding(x) -> NamedSharding:
    axes = (BATCH_AXES + (None,) * x.ndim)[:x.ndim]
    spec, wanted = logical_to_spec(axes, rules, x.shape, mesh), logical_to_spec(axes, rules)
    if spec != wanted:
      raise ConfigError(
          f"batch shape {tuple(x.shape)} does not divide the mesh axes {wanted} of "
          f"{dict(mesh.shape)}: make the batch size (and length) a multiple of those sizes")
    return NamedSharding(mesh, spec)

  return jax.tree.map(sharding, batch)


# ---------------------------------------------------------------------------
# Sharded model creation


def abstract_state(make_model: Callable[[], nnx.Module], mesh: Mesh,
                   rules: Rules = DEFAULT_RULES) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, abstract state, its shardings) without allocating any parameter."""
  graphdef, state = nnx.split(nnx.eval_shape(make_model))
  return graphdef, state, state_shardings(state, mesh, rules)


def create_sharded_model(make_model: Callable[[], nnx.Module], mesh: Mesh,
                         rules: Rules = DEFAULT_RULES) -> nnx.Module:
  """Builds `make_model()` with every parameter created directly in its shards.

  `make_model` must create its own `nnx.Rngs` (e.g. `lambda: MaskedLM(cfg,
  rngs=nnx.Rngs(seed))`), so initialisation runs inside `jax.jit` and no
  device ever holds a whole model (flax's "sharded init" pattern).
  """
  graphdef, _, shardings = abstract_state(make_model, mesh, rules)
  with use_mesh(mesh, rules):
    state = jax.jit(lambda: nnx.split(make_model())[1], out_shardings=shardings)()
  return nnx.merge(graphdef, state)

