"""Flat views of parameter pytrees (via ``jax.flatten_util.ravel_pytree``)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def flatten(tree: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
  """Returns ``(flat, unflatten)``; ``flat`` is at least float32.

  Low-precision leaves (bfloat16, float16) are perturbed and accumulated in
  float32 so that small perturbations and long population sums do not round
  away; ``unflatten`` casts every leaf back to its own dtype.
  """
  flat, unravel = ravel_pytree(tree)
  raveled_dtype = flat.dtype
  compute_dtype = jnp.promote_types(raveled_dtype, jnp.float32)

  def unflatten(vector: jax.Array) -> Any:
    return unravel(vector.astype(raveled_dtype))

  return flat.astype(compute_dtype), unflatten
