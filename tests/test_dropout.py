"""Dropout masks (`layers.dropout_bits`): the rate, independence between keys, positions and
rows, determinism, and the same mask however the input is sharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from polyglot.models import layers

SHAPE = (64, 128, 256)  # [b, l, d]: 2M elements


def _kept(rng, shape=SHAPE, rate=0.1) -> np.ndarray:
  return np.asarray(layers.dropout(jnp.ones(shape), rate, rng)) != 0


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_elements_are_kept_at_one_minus_the_rate_and_scaled(rate):
  x = jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)
  y = np.asarray(jax.jit(layers.dropout, static_argnums=1)(x, rate, jax.random.key(0)))
  kept = y != 0
  n, p = kept.size, 1 - rate
  assert abs(kept.mean() - p) < 5 * (p * (1 - p) / n) ** 0.5, kept.mean()
  np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / p, rtol=1e-6)


def test_masks_are_independent_across_keys_positions_and_rows():
  """Joint keep rates against p^2 (p = 0.9), each within 5 standard errors: two keys (also
  the split keys of one parent), neighbours along every axis, and rows (a row's mask is not
  another's shifted)."""
  p = 0.9
  first, second = jax.random.split(jax.random.key(1))
  a, b, c, d = (_kept(k) for k in (jax.random.key(0), jax.random.key(7), first, second))
  np.testing.assert_array_equal(a, _kept(jax.random.key(0)))  # a key fixes its mask

  def near_p2(both: np.ndarray, what: str):
    n = both.size
    assert abs(both.mean() - p * p) < 5 * (p * p * (1 - p * p) / n) ** 0.5, (what, both.mean())

  near_p2(a & b, "keys 0 and 7")
  near_p2(c & d, "split keys")
  for axis in range(3):
    near_p2(np.take(a, range(a.shape[axis] - 1), axis) & np.take(a, range(1, a.shape[axis]),
                                                                  axis), f"axis {axis}")
  rows = a.reshape(64, -1)
  for shift in (0, 1, 7):
    near_p2(rows[0] & np.roll(rows[1], shift), f"rows 0 and 1, shifted {shift}")


def test_attention_sized_arrays_get_distinct_rows():
  """[b, h, l, m] masks: one row per example, each row's columns hashed with its key."""
  kept = _kept(jax.random.key(3), (4, 2, 64, 64))
  assert len({row.tobytes() for row in kept.reshape(4, -1)}) == 4


def test_the_mask_is_the_same_sharded_over_eight_devices():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  x = jax.device_put(jnp.ones(SHAPE), sharded)
  fn = jax.jit(lambda x, k: layers.dropout(x, 0.1, k), out_shardings=sharded)
  np.testing.assert_array_equal(np.asarray(fn(x, jax.random.key(5))),
                                np.asarray(layers.dropout(jnp.ones(SHAPE), 0.1,
                                                          jax.random.key(5))))
