"""estimators._noise.normal: the fused keyed normal is jax.random.normal, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad.estimators import _noise


def _bits(x):
  x = np.asarray(x)
  return x.view({2: np.uint16, 4: np.uint32}[x.dtype.itemsize])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 4), (100_003,)])
def test_bit_identical_to_jax_random_normal(dtype, shape):
  draw = jax.jit(_noise.normal, static_argnums=(1, 2))
  reference = jax.jit(jax.random.normal, static_argnums=(1, 2))
  for seed in range(4):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1234)
    ours, theirs = draw(key, shape, dtype), reference(key, shape, dtype)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(_bits(ours), _bits(theirs))


def test_threefry_known_answers():
  """Random123's known-answer vectors for Threefry-2x32-20 (Salmon et al. 2011)."""
  cases = [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
           ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
           ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
  u32 = lambda v: jnp.asarray(v, jnp.uint32)
  for key, count, expected in cases:
    out = jax.jit(_noise.threefry2x32)(*map(u32, key), *map(u32, count))
    assert tuple(int(o) for o in out) == expected


def test_under_vmap_and_typed_keys():
  keys = jax.random.split(jax.random.PRNGKey(3), 5)
  ours = jax.jit(jax.vmap(lambda k: _noise.normal(k, (33,))))(keys)
  theirs = jax.vmap(lambda k: jax.random.normal(k, (33,)))(keys)
  np.testing.assert_array_equal(_bits(ours), _bits(theirs))
  typed = jax.random.key(9)
  np.testing.assert_array_equal(_bits(_noise.normal(typed, (10,))),
                                _bits(jax.random.normal(typed, (10,))))


def test_defers_where_bits_could_differ():
  rbg = jax.random.key(0, impl="rbg")
  assert _noise._fast_path(rbg, (4,), jnp.float32) is None
  np.testing.assert_array_equal(_noise.normal(rbg, (8,)), jax.random.normal(rbg, (8,)))
  key = jax.random.PRNGKey(0)
  assert _noise._fast_path(key, (4,), jnp.float32) is not None
  previous = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", not previous)
  try:
    assert _noise._fast_path(key, (4,), jnp.float32) is None
    np.testing.assert_array_equal(_noise.normal(key, (8,)), jax.random.normal(key, (8,)))
  finally:
    jax.config.update("jax_threefry_partitionable", previous)


def test_population_directions_keep_their_meaning():
  """A member's direction is still ``jax.random.normal(fold_in(key, i))``."""
  key = jax.random.PRNGKey(5)
  for i in (0, 1, 6):
    z = _noise.gaussian_direction(key, jnp.asarray(i), 1000, jnp.float32, antithetic=False)
    np.testing.assert_array_equal(_bits(z), _bits(jax.random.normal(jax.random.fold_in(key, i),
                                                                      (1000,))))
