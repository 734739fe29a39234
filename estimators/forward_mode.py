"""Exact gradient by forward-mode JVPs along the coordinate basis."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import _checks, _population, _tree


def forward_mode(loss_fn: Callable[[Any], jax.Array], params: Any,
                 key: jax.Array | None = None, *,
                 chunk_size: int | None = None,
                 axis_name: str | None = None) -> Any:
  """Exact gradient ``dL/dtheta_j = J_L(theta) e_j`` from D forward-mode JVPs.

  The forward-mode alternative of es_protonet_tpu.txt section II-D/E: no tape
  is stored, so memory does not grow with the length of an inner loop inside
  ``loss_fn`` (unlike :func:`backprop`); it costs D JVPs instead.

  Args:
    loss_fn: ``params -> scalar``.
    params: pytree of floating arrays (D elements in total).
    key: unused; accepted for the common signature.
    chunk_size: basis directions pushed forward at once (``vmap``); the rest
      run sequentially. ``None`` pushes all D at once (fastest, D x D tangents).
    axis_name: inside ``pmap``/``shard_map``, split coordinates across this axis.

  Returns:
    A pytree shaped and typed like ``params``.
  """
  del key
  _checks.float_pytree("params", params)
  _checks.scalar_loss("loss_fn", loss_fn, params)
  chunk_size = _checks.chunk_size(chunk_size)
  theta, unflatten = _tree.flatten(params)
  size = theta.shape[0]

  def flat_loss(vector):
    return loss_fn(unflatten(vector)).astype(theta.dtype)

  def directional_derivative(j):
    tangent = jax.nn.one_hot(j, size, dtype=theta.dtype)
    return jax.jvp(flat_loss, (theta,), (tangent,))[1]

  grad = _population.coordinate_values(
      directional_derivative, size, chunk_size, axis_name)
  return unflatten(grad)
