"""Members evaluated ``chunk_size`` at a time (``vmap`` inside ``scan``), so
peak memory is ``O(chunk_size * D)`` instead of ``O(P * D)``.

Every chunked loop pads the member indices with ``pad_chunks`` (edge
padding: a padded slot evaluates a valid member and is masked out).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from . import _auto_chunk, _sharding

Array = jax.Array


def pad_chunks(indices: Array, chunk: int) -> tuple[Array, Array]:
  """``indices`` as ``[num_chunks, chunk]`` (edge-padded) and the matching
  validity mask (False on the padding)."""
  n = indices.shape[0]
  num = -(-n // chunk)
  pad = num * chunk - n
  idx = jnp.pad(indices, (0, pad), mode="edge").reshape(num, chunk)
  valid = (jnp.arange(num * chunk) < n).reshape(num, chunk)
  return idx, valid


def map_members(fn: Callable[[Array], Array], indices: Array,
                chunk_size: int | None) -> Array:
  """``vmap(fn)(indices)`` evaluated ``chunk_size`` members at a time."""
  if chunk_size is None or chunk_size >= indices.shape[0]:
    return jax.vmap(fn)(indices)
  return jax.lax.map(fn, indices, batch_size=chunk_size)


def _masked_sum(values: Array, ok: Array) -> Array:
  return jnp.where(ok.reshape(-1, *([1] * (values.ndim - 1))), values, 0).sum(0)


def map_and_sum(fn: Callable, indices: Array, chunk_size: int | None):
  """``(stack of outs, sum of totals)`` over ``(outs, total) = fn(i)``, chunked:
  only ``chunk_size`` members' ``total`` (e.g. a gradient) are alive at a time,
  never the whole stack of them."""
  n = indices.shape[0]
  if chunk_size is None or chunk_size >= n:
    outs, totals = jax.vmap(fn)(indices)
    return outs, jax.tree_util.tree_map(lambda t: t.sum(0), totals)
  idx, valid = pad_chunks(indices, chunk_size)
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape[1:], s.dtype),
                                 jax.eval_shape(lambda i: jax.vmap(fn)(i)[1], idx[0]))

  def body(total, chunk):
    ids, ok = chunk
    outs, totals = jax.vmap(fn)(ids)
    masked = jax.tree_util.tree_map(lambda t: _masked_sum(t, ok), totals)
    return jax.tree_util.tree_map(jnp.add, total, masked), outs

  total, outs = jax.lax.scan(body, zeros, (idx, valid))
  outs = jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:])[:n], outs)
  return outs, total


def weighted_direction_sum(direction: Callable[[Array], Array], weights: Array,
                           indices: Array, size: int, dtype,
                           chunk_size: int | None,
                           axis_name: str | None,
                           directions: Array | None = None) -> Array:
  """``sum_i weights[i] * direction(indices[i])``, summed over all devices.

  Directions are regenerated chunk by chunk and folded into one accumulator,
  so only ``chunk_size`` directions are alive at a time. ``directions``: the
  ``[n, D]`` directions when the caller already holds them all (one chunk),
  used instead of drawing them again.
  """
  n = indices.shape[0]
  chunk = n if chunk_size is None else min(chunk_size, n)
  if directions is None and chunk == n:
    directions = jax.vmap(direction)(indices)        # one chunk: all [n, D] at once
  if directions is not None:
    return _sharding.allreduce(weights.astype(dtype) @ directions, axis_name)
  # Padded members get weight 0 and a valid index, so they add nothing.
  idx, valid = pad_chunks(indices, chunk)
  w = jnp.pad(weights.astype(dtype), (0, valid.size - n)).reshape(valid.shape)

  def body(total, chunk_args):
    chunk_idx, chunk_w = chunk_args
    dirs = jax.vmap(direction)(chunk_idx)            # [chunk, D]
    return total + chunk_w @ dirs, None

  total, _ = jax.lax.scan(body, jnp.zeros((size,), dtype), (idx, w))
  return _sharding.allreduce(total, axis_name)


def coordinate_values(fn: Callable[[Array], Array], size: int,
                      chunk_size: int | None | str,
                      axis_name: str | None) -> tuple[Array, _auto_chunk.ChunkPlan]:
  """``[fn(j) for j in range(size)]``, chunked and split across devices, and
  the chunk plan used.

  Used by the basis-direction estimators (finite differences, forward mode),
  whose "population" is one member per coordinate. Coordinates are padded up
  to a multiple of the device count; padded entries are computed on a valid
  coordinate and dropped. ``chunk_size="auto"`` is resolved by measuring
  ``fn`` (``_auto_chunk.resolve``).
  """
  shards = _sharding.num_shards(axis_name)
  per_shard = -(-size // shards)
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per_shard
  idx = start + jnp.arange(per_shard)
  member = lambda j: fn(jnp.minimum(j, size - 1))
  plan = _auto_chunk.resolve(chunk_size, per_shard, size, jnp.float32, member, idx[0])
  vals = map_members(member, idx, plan.chunk_size)
  return _sharding.gather(vals, axis_name)[:size], plan
