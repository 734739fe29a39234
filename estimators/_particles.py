"""How the unrolled estimators lay out their particles, and the keys a
particle's problem, data and noise derive from (by global index, never by
chunk or device position)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import _checks
from . import _sharding


class Layout(NamedTuple):
  """How an unrolled estimator lays out its particles."""
  group: int            # particles per group: 2 for antithetic pairs
  shared_inner: bool    # one inner state per pair (truncated ES), else one per particle
  accumulator: bool     # PES: the pair's perturbations summed since its reset


LAYOUTS = {
    "truncated_backprop": Layout(1, False, False),
    "truncated_es": Layout(2, True, False),
    "pes": Layout(2, False, True),
    "noise_reuse_es": Layout(2, False, False),
}


def raw_key(name: str, key: Any) -> jax.Array:
  """A checked single key as raw uint32 words (typed keys unwrapped)."""
  _checks.prng_key(name, key)
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def data_key(episode_key, window):
  return jax.random.fold_in(jax.random.fold_in(episode_key, 0), window)


def noise_base(episode_key):
  return jax.random.fold_in(episode_key, 1)


def new_episode_key(key, group, episode_tag):
  """The key of a fresh inner problem for particle group ``group`` (a pair,
  or one particle), from the call key: the same on every device."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 0x5E7), episode_tag), group)


def signature(params: Any) -> tuple:
  leaves, treedef = jax.tree_util.tree_flatten(params)
  return treedef, tuple((tuple(jnp.shape(x)), str(jnp.result_type(x))) for x in leaves)


def local_rows(num_particles: int, layout: Layout, axis_name: str | None) -> jax.Array:
  """Global group ids of this device's rows (pairs for truncated ES, else
  particles' groups), in row order."""
  shards = _sharding.num_shards(axis_name)
  if num_particles % (layout.group * shards):
    what = "antithetic pairs" if layout.group == 2 else "particles"
    where = "" if axis_name is None else f" over the {shards} device(s) of axis {axis_name!r}"
    raise ValueError(f"`num_particles` ({num_particles}) must split into {what} evenly{where}: "
                     f"pass a multiple of {layout.group * shards}.")
  rows = num_particles // (layout.group if layout.shared_inner else 1)
  per = rows // shards
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per
  ids = start + jnp.arange(per)
  return ids if layout.shared_inner else ids // layout.group
