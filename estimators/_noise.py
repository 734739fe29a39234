"""Noise: every sampling estimator's directions, keyed by member index.

Member ``i``'s direction is regenerated on demand from ``fold_in(key, i)``
(antithetic pairs share ``fold_in(key, i // 2)`` with opposite signs): no
``P x D`` matrix is ever stored, and a member's noise does not depend on how
the population is chunked or sharded. ``noise="table"`` slices directions out
of one per-call table instead (OpenAI-ES's shared noise table).

Keyed Gaussian draws, bit for bit ``jax.random.normal``, fused on CPU.

Every sampling estimator spends most of its time drawing directions: at
D = 1e6 an ``es`` step draws tens of millions of normals, twice with centered
ranks. ``jax.random.normal`` hashes counters with Threefry-2x32 (Salmon,
Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3",
SC'11; 20 rounds) and maps the bits to ``sqrt(2) erfinv(u)``. On CPU, JAX
lowers the hash as a 5-iteration ``while`` loop (to keep compile times down),
which XLA cannot fuse with the bit-to-float transform or with the caller's
use of the draw: every iteration materializes the counters in memory.

``normal`` computes the same function with the 20 rounds unrolled, so the
hash and the transform fuse into one loop over the draws, which writes each
direction once for all its uses (see ``normal`` on why once).
It reproduces ``jax.random.normal(key, shape, dtype)`` exactly (tested
bit-for-bit for float32, bfloat16 and float16 and many keys and shapes): what
a key means does not change, only the time (2.0-3.5x less per normal here, see
benchmark 3). Where the bits could differ it defers to ``jax.random.normal``:
other backends (whose own lowering is already unrolled or a fused kernel),
``jax_threefry_partitionable=False``, non-Threefry keys, float64, and more
than 2**32 draws.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x, d: int):
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011, Table 4's rotations),
  unrolled: the same function as JAX's ``threefry2x32`` primitive."""
  ks = (k1, k2, k1 ^ k2 ^ _KS_PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for block in range(5):
    for r in _ROTATIONS[block % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, r) ^ x1
    # Key injection after every 4 rounds, with the block counter.
    x1 = x1 + ks[(block + 1) % 3]
    x2 = x2 + ks[(block + 2) % 3] + np.uint32(block + 1)
  return x1, x2


def _raw_threefry_key(key):
  """The key's two uint32 words, or None if it is not a Threefry-2x32 key."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != () or "threefry" not in str(jax.random.key_impl(key)):
      return None
    return jax.random.key_data(key)
  if key.shape != (2,) or key.dtype != jnp.uint32:
    return None
  if "threefry" not in str(jax.config.jax_default_prng_impl):
    return None
  return key


def _fast_path(key, shape, dtype):
  dtype = jnp.dtype(dtype)
  if jax.default_backend() != "cpu" or not jax.config.jax_threefry_partitionable:
    return None
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return None
  if math.prod(shape) >= 2**32:
    return None
  return _raw_threefry_key(key)


def normal(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """``jax.random.normal(key, shape, dtype)``, the same bits, fused on CPU.

  The steps are JAX's (``random.uniform`` then ``_normal_real``): 32 bits per
  draw from ``threefry2x32(key, (0, i))`` as ``hi ^ lo`` (the partitionable
  counter layout), truncated to 8 or 16 bits for 16-bit floats; their top
  mantissa bits make ``f`` in [1, 2); ``u = max(lo, (f - 1)(1 - lo) + lo)``
  with ``lo`` the float after -1; the draw is ``sqrt(2) erfinv(u)``.
  """
  shape = tuple(shape)
  words = _fast_path(key, shape, dtype)
  if words is None:
    return jax.random.normal(key, shape, dtype)
  # XLA's fusion duplicates cheap elementwise producers into every consumer,
  # and integer rounds count as cheap: a direction read twice (theta + sigma z
  # and theta - sigma z, or the losses and the stored sum of centered ranks)
  # would run all 20 rounds once per read. Drawn inside a loop of one trip
  # that XLA cannot count (the trip count is computed from the key), it is
  # written once and read by every consumer (an es centered-rank step at
  # D = 1e4, P = 64 on this project's 2-core CPU: 8.0-10.7 ms -> 4.6-5.6 ms).
  # Should a compiler fold the count, only the speed changes.
  trips = 1 + (words[0] >> np.uint32(31) >> np.uint32(1)).astype(jnp.int32)
  # The initial carry takes the key's type (under shard_map a key may vary
  # across devices, and the carry must vary with it).
  initial = jnp.broadcast_to((words[0] & np.uint32(0)).astype(dtype), shape)
  return lax.fori_loop(0, trips, lambda _, z: _draw(words, shape, dtype), initial)


def _draw(words, shape, dtype) -> jax.Array:
  dtype = jnp.dtype(dtype)
  finfo = jnp.finfo(dtype)
  nbits, nmant = finfo.bits, finfo.nmant
  rng_bits = 8 if nmant < 8 else nbits
  uint = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}
  count = lax.iota(jnp.uint32, math.prod(shape))
  hi, lo_word = threefry2x32(words[0], words[1], jnp.zeros_like(count), count)
  bits = (hi ^ lo_word).astype(uint[rng_bits]).astype(uint[nbits])
  one = np.array(1.0, dtype).view(uint[nbits])
  mantissa = (bits >> np.array(rng_bits - nmant, uint[nbits])) | one
  floats = lax.bitcast_convert_type(mantissa, dtype) - np.array(1.0, dtype)
  # As in random.uniform: the bounds are traced values of ``dtype``.
  low = lax.convert_element_type(
      np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype), dtype)
  high = lax.convert_element_type(np.array(1.0, dtype), dtype)
  u = lax.max(low, floats * (high - low) + low)
  return lax.mul(np.array(np.sqrt(2), dtype), lax.erf_inv(u)).reshape(shape)


NOISES = ("normal", "table")
# noise="table": the table holds size + max(size, TABLE_MIN_SLACK) entries.
TABLE_MIN_SLACK = 1 << 16


def noise_table(key: jax.Array, size: int, dtype) -> jax.Array:
  """The per-call Gaussian table of ``noise="table"``: ``size + slack`` draws
  from a key derived from ``key`` (slack = max(size, 65,536))."""
  slack = max(size, TABLE_MIN_SLACK)
  return normal(jax.random.fold_in(key, 0x7AB1E), (size + slack,), dtype)


def table_direction(table: jax.Array, key: jax.Array, index: jax.Array, size: int) -> jax.Array:
  """Member ``index``'s direction under ``noise="table"``: the ``size``-slice
  of ``table`` at the offset ``randint(fold_in(key, index))`` (OpenAI-ES's
  shared noise table, Salimans et al. 2017, arXiv:1703.03864, drawn afresh
  from the key)."""
  slack = table.shape[0] - size
  offset = jax.random.randint(jax.random.fold_in(key, index), (), 0, slack)
  return jax.lax.dynamic_slice(table, (offset,), (size,))


def gaussian_direction(key: jax.Array, index: jax.Array, size: int, dtype,
                       *, antithetic: bool) -> jax.Array:
  """Member ``index``'s ``N(0, I)`` direction (pairs ``2u, 2u+1`` mirror ``z_u``)."""
  if antithetic:
    z = gaussian_direction(key, index // 2, size, dtype, antithetic=False)
    return jnp.where(index % 2 == 0, z, -z)
  return normal(jax.random.fold_in(key, index), (size,), dtype)
