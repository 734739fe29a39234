"""Unbiased forward gradient (Baydin et al., 2022, "Gradients without backpropagation")."""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import _checks, _population, _tree


def forward_gradient(loss_fn: Callable[[Any], jax.Array], params: Any,
                     key: jax.Array, *, num_directions: int = 1,
                     chunk_size: int | None = None,
                     axis_name: str | None = None) -> Any:
  """``g = (1/K) sum_k (grad L . v_k) v_k`` with ``v_k ~ N(0, I)``.

  ``E[v v^T] = I`` makes ``g`` unbiased for ``grad L``; each term costs one JVP
  (no tape), so memory does not grow with an inner loop inside ``loss_fn``.
  Direction ``k`` is regenerated from ``fold_in(key, k)``.

  Args:
    loss_fn: ``params -> scalar``.
    params: pytree of floating arrays.
    key: PRNG key.
    num_directions: K, the number of random tangents averaged.
    chunk_size: tangents evaluated at once; ``None`` = all K.
    axis_name: inside ``pmap``/``shard_map``, split the K tangents over devices.

  Returns:
    A pytree shaped and typed like ``params``.
  """
  _checks.float_pytree("params", params)
  _checks.scalar_loss("loss_fn", loss_fn, params)
  num_directions = _checks.count("num_directions", num_directions)
  chunk_size = _checks.chunk_size(chunk_size)
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype

  def flat_loss(vector):
    return loss_fn(unflatten(vector)).astype(dtype)

  def direction(i):
    return _population.gaussian_direction(key, i, size, dtype, antithetic=False)

  def directional_derivative(i):
    return jax.jvp(flat_loss, (theta,), (direction(i),))[1]

  indices = _population.local_indices(num_directions, axis_name)
  slopes = _population.map_members(directional_derivative, indices, chunk_size)
  grad = _population.weighted_direction_sum(
      direction, slopes / num_directions, indices, size, dtype, chunk_size,
      axis_name)
  return unflatten(grad)
