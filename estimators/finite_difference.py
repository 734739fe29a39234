"""Finite differences cast as ES (es_protonet_tpu.txt section II-G)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import _checks, _population, _tree

SCHEMES = ("forward", "central")


def finite_difference(loss_fn: Callable[[Any], jax.Array], params: Any,
                      key: jax.Array | None = None, *, step: float = 1e-3,
                      scheme: str = "forward", chunk_size: int | None = None,
                      axis_name: str | None = None) -> Any:
  """Coordinate-wise finite differences, one population member per coordinate.

  The paper's FD-as-ES: D candidates, candidate j equal to theta with
  coordinate j nudged by ``step`` (sigma_FD = 0.001), plus one base candidate
  at theta whose loss replaces the mean reward of eq. (9) and ``step``
  replaces the reward std:

      forward:  g_j = (L(theta + h e_j) - L(theta)) / h          (D + 1 evals)
      central:  g_j = (L(theta + h e_j) - L(theta - h e_j)) / 2h (2 D evals)

  The paper's extra 1/n factor of eq. (9) is a constant that its learning
  rates absorb; here ``g`` is the derivative estimate itself, so it is exact on
  linear losses and O(h) (forward) / O(h^2) (central) accurate on smooth ones.
  The step actually realised in the parameters' dtypes is divided by;
  coordinates whose difference is not finite (or whose nudge rounds away in
  a low-precision leaf) get 0.

  Args:
    loss_fn: ``params -> scalar``.
    params: pytree of floating arrays (D elements in total).
    key: unused (the candidates are deterministic); kept for the signature.
    step: the nudge h (> 0).
    scheme: ``"forward"`` or ``"central"``.
    chunk_size: candidates evaluated at once; peak memory O(chunk_size * D).
    axis_name: inside ``pmap``/``shard_map``, split coordinates over this axis.

  Returns:
    A pytree shaped and typed like ``params``.
  """
  del key
  _checks.positive("step", step)
  scheme = _checks.choice("scheme", scheme, SCHEMES)
  chunk_size = _checks.chunk_size(chunk_size)
  _checks.float_pytree("params", params)
  _checks.scalar_loss("loss_fn", loss_fn, params)
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype
  base_point = _tree.flatten(unflatten(theta))[0]

  def flat_loss(vector):
    return loss_fn(unflatten(vector)).astype(dtype)

  # Nudged coordinates as the parameters' own dtypes can represent them: the
  # realised step (not the nominal one) is divided by, which keeps FD exact on
  # linear losses despite rounding of theta + h.
  plus = _tree.flatten(unflatten(theta + step))[0]
  minus = _tree.flatten(unflatten(theta - step))[0]

  def loss_with(j, values):
    return flat_loss(base_point.at[j].set(values[j]))

  if scheme == "forward":
    base = flat_loss(base_point)
    difference = lambda j: (loss_with(j, plus) - base, plus[j] - base_point[j])
  else:
    difference = lambda j: (loss_with(j, plus) - loss_with(j, minus),
                            plus[j] - minus[j])

  def derivative(j):
    rise, run = difference(j)
    return jnp.where(run != 0, rise / jnp.where(run != 0, run, 1.0), 0.0)

  grad = _population.coordinate_values(derivative, size, chunk_size, axis_name)
  return unflatten(jnp.where(jnp.isfinite(grad), grad, 0.0))
