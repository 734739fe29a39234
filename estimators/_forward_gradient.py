"""Unbiased forward gradient.

Baydin, Pearlmutter, Syme, Wood & Torr (2022), "Gradients without
Backpropagation", arXiv:2202.08587.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _autodiff, _checks
from . import _auto_chunk, _chunking, _noise, _perturbation, _sharding, _tree


@_autodiff.traces_forward_mode
def forward_gradient(loss_fn: Callable[[Any], Any], params: Any,
                     key: jax.Array, *, population: int = 1,
                     chunk_size: int | str | None = "auto",
                     axis_name: str | None = None, has_aux: bool = False,
                     return_info: bool = False, num_directions: int | None = None) -> Any:
  """``g = (1/K) sum_k (grad L . v_k) v_k`` with ``v_k ~ N(0, I)``.

  ``E[v v^T] = I`` makes ``g`` unbiased for ``grad L``; each term costs one JVP
  (no tape), so memory does not grow with an inner loop inside ``loss_fn``.
  Direction ``k`` is regenerated from ``fold_in(key, k)``. Scale: unbiased, but
  ``E|g|^2 = (1 + (D + 1)/K) |grad L|^2``, so a single draw is about
  ``sqrt(D/K)`` times longer than the gradient. Use Adam at backprop's
  learning rate: SGD is stable only near ``K/D`` times backprop's rate, where
  it barely moves (the documentation's "Choosing an estimator" page measures
  both on MAML sine).

  Non-finite directional derivatives are left out (the average is over the
  finite ones); if none is finite the estimate is NaN, never a silent zero.

  Args:
    loss_fn: ``params -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    params: pytree of floating arrays.
    key: PRNG key.
    population: K, the number of random tangents averaged (the first-order
      estimators' one name for how many members they evaluate).
    chunk_size: tangents evaluated at once; ``"auto"`` (default) measures one
      JVP's memory and bounds the chunk; ``None`` = all K.
    axis_name: inside ``shard_map``/``pmap``, split the K tangents over devices
      (the key must be the same on every device).
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the result is
      ``(grads, aux)`` with ``aux`` at ``params``.
    return_info: also return a ``PopulationInfo`` (members evaluated, how
      many were non-finite and left out), last in the result tuple.
    num_directions: deprecated name of ``population`` (``DeprecationWarning``).

  Returns:
    A pytree shaped and typed like ``params``; with ``has_aux``, ``(grads, aux)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> g = estimators.forward_gradient(loss, {"w": jnp.array([1.0, -2.0])},
    ...                                 jax.random.PRNGKey(0), population=4096)
    >>> bool(jnp.allclose(g["w"], jnp.array([2.0, -4.0]), atol=0.3))   # unbiased
    True

  References:
    Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without
    Backpropagation", arXiv:2202.08587.
  """
  _checks.prng_key("key", key)
  _checks.float_pytree("params", params)
  loss = _checks.scalar_loss("loss_fn", loss_fn, params, has_aux=has_aux)
  population = _checks.renamed("population", population, 1, "num_directions", num_directions)
  num_directions = _checks.count("population", population)
  chunk_size = _checks.chunk_size(chunk_size, allow_auto=True)
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype

  def flat_loss(vector):
    return loss(unflatten(vector)).astype(dtype)

  def direction(i):
    return _noise.gaussian_direction(key, i, size, dtype, antithetic=False)

  def directional_derivative(i):
    return jax.jvp(flat_loss, (theta,), (direction(i),))[1]

  indices = _sharding.local_indices(num_directions, axis_name, name="population")
  plan = _auto_chunk.resolve(chunk_size, indices.shape[0], size, dtype,
                             directional_derivative, indices[0])
  slopes = _chunking.map_members(directional_derivative, indices, plan.chunk_size)
  finite = jnp.isfinite(slopes)
  kept = _sharding.allreduce(finite.sum(), axis_name)
  # Non-finite directional derivatives are left out; none left gives NaN.
  weights = jnp.where(finite, slopes, 0.0) / jnp.maximum(kept, 1).astype(dtype)
  grad = _chunking.weighted_direction_sum(
      direction, weights, indices, size, dtype, plan.chunk_size, axis_name)
  grad = jnp.where(kept > 0, grad, jnp.nan)
  info = _perturbation.PopulationInfo(num_directions, (num_directions - kept).astype(jnp.int32),
                                      plan)
  return _checks.with_aux(unflatten(grad), loss_fn, (params,), has_aux, info, return_info)
