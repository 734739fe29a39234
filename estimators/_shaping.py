"""Fitness shaping: population losses to member weights.

``"standardize"`` is applied inside the perturbation engine's single pass (it
is linear in the losses; see ``_perturbation``); ``"centered_rank"`` needs
every loss first and lives here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

SHAPINGS = ("none", "standardize", "centered_rank")


def centered_ranks(values: Array, mask: Array) -> Array:
  """Ranks of finite members mapped linearly onto [-0.5, 0.5] (OpenAI-ES,
  Salimans et al. 2017, arXiv:1703.03864).

  Ties share their mean rank (so all-equal losses give zero weights); members
  with a non-finite loss (``mask`` False) get weight 0 and take no part in the
  ranking. O(P log P) via a sort, never a P x P comparison matrix.
  """
  v = jnp.where(mask, values, jnp.inf)
  ordered = jnp.sort(v)
  low = jnp.searchsorted(ordered, v, side="left")
  high = jnp.searchsorted(ordered, v, side="right") - 1
  rank = 0.5 * (low + high).astype(values.dtype)
  n = mask.sum()
  shaped = rank / jnp.maximum(n - 1, 1).astype(values.dtype) - 0.5
  return jnp.where(mask & (n > 1), shaped, 0.0)
