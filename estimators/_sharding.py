"""Members across devices: which global member indices this device evaluates,
and the collectives that put the population back together.

Under ``shard_map``/``pmap`` with ``axis_name``, each device takes a contiguous
block of member indices; per-member values (scalars) are gathered so every
device computes the same weights, and weighted direction sums are ``psum``-ed
(the allreduce of Lenc et al. 2019, arXiv:1907.05319, section II-F). Noise is
keyed by the global index, so a key gives the same result on 1 or N devices,
up to float summation order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def num_shards(axis_name: str | None) -> int:
  """Devices along ``axis_name`` (1 without one); a clear error when the axis
  is not bound by an enclosing ``pmap``/``shard_map``/``vmap``."""
  if axis_name is None:
    return 1
  try:
    return int(jax.lax.axis_size(axis_name))
  except NameError:
    raise ValueError(
        f"`axis_name` {axis_name!r} is not bound here: call the estimator inside "
        f"jax.shard_map / jax.pmap / jax.vmap with that axis name (the key must be the "
        f"same on every device), or pass axis_name=None.") from None


def local_indices(num_members: int, axis_name: str | None, *, name: str = "population",
                  per_unit: int = 1) -> Array:
  """Global member indices handled by this device (all of them off-axis).

  ``num_members`` units (antithetic pairs count as one unit of ``per_unit``
  = 2 members) must split evenly; the error names the argument ``name`` and
  the value the user passed (``num_members * per_unit``), not the unit count."""
  shards = num_shards(axis_name)
  if num_members % shards:
    given = num_members * per_unit
    what = " +/- pairs" if per_unit == 2 else ""
    raise ValueError(
        f"`{name}` ({given}) must split into{what} evenly over the {shards} device(s) of axis "
        f"{axis_name!r}: pass a multiple of {per_unit * shards}.")
  per_shard = num_members // shards
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per_shard
  return start + jnp.arange(per_shard)


def gather(values: Array, axis_name: str | None) -> Array:
  """Concatenates per-device member values in global member order.

  Each device writes its block into zeros and the blocks are ``psum``-ed:
  the sum adds exact zeros (bit-identical to an all-gather) and, unlike
  ``all_gather``, its result is typed as replicated, so callers may return it
  from ``shard_map`` with ``out_specs=P()``.
  """
  if axis_name is None:
    return values
  shards = num_shards(axis_name)
  block = values.shape[0]
  full = jnp.zeros((shards * block, *values.shape[1:]), values.dtype)
  full = jax.lax.dynamic_update_slice_in_dim(full, values, jax.lax.axis_index(axis_name) * block, 0)
  return jax.lax.psum(full, axis_name)


def allreduce(x: Array, axis_name: str | None) -> Array:
  """The sum over the devices of ``axis_name`` (``x`` itself without one)."""
  return x if axis_name is None else jax.lax.psum(x, axis_name)
