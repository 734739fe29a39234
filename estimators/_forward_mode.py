"""Exact gradient by forward-mode JVPs along the coordinate basis."""

from __future__ import annotations

from typing import Any, Callable

import jax

from .. import _autodiff, _checks
from . import _chunking, _tree


@_autodiff.traces_forward_mode
def forward_mode(loss_fn: Callable[[Any], Any], params: Any,
                 key: jax.Array | None = None, *,
                 chunk_size: int | str | None = "auto",
                 axis_name: str | None = None, has_aux: bool = False) -> Any:
  """Exact gradient ``dL/dtheta_j = J_L(theta) e_j`` from D forward-mode JVPs.

  The forward-mode alternative of the ES-ProtoNet TPU paper
  section II-D/E: no tape is stored, so memory does not grow
  with the length of an inner loop inside ``loss_fn`` (unlike
  ``backprop``); it costs D JVPs instead.

  Args:
    loss_fn: ``params -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    params: pytree of floating arrays (D elements in total).
    key: unused; accepted for the common signature.
    chunk_size: basis directions pushed forward at once (``vmap``); the rest
      run sequentially. ``"auto"`` (default) measures one JVP's memory and
      bounds the chunk; ``None`` pushes all
      D at once (D x D tangents: only for small D).
    axis_name: inside ``shard_map``/``pmap``, split coordinates across this axis.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the result is
      ``(grads, aux)`` with ``aux`` at ``params``.

  Returns:
    A pytree shaped and typed like ``params``; with ``has_aux``, ``(grads, aux)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators
    >>> g = estimators.forward_mode(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.array([1.0, -2.0])})
    >>> g["w"].tolist()
    [2.0, -4.0]

  References:
    Baydin, Pearlmutter, Radul & Siskind 2018, "Automatic Differentiation in
    Machine Learning: a Survey", arXiv:1502.05767; Sheng & He 2022,
    "Distributed Evolution Strategies Using TPUs for Meta-Learning",
    arXiv:2201.00093, section II-D/E.
  """
  del key
  _checks.float_pytree("params", params)
  loss = _checks.scalar_loss("loss_fn", loss_fn, params, has_aux=has_aux)
  chunk_size = _checks.chunk_size(chunk_size, allow_auto=True)
  theta, unflatten = _tree.flatten(params)
  size = theta.shape[0]

  def flat_loss(vector):
    return loss(unflatten(vector)).astype(theta.dtype)

  def directional_derivative(j):
    tangent = jax.nn.one_hot(j, size, dtype=theta.dtype)
    return jax.jvp(flat_loss, (theta,), (tangent,))[1]

  grad, _ = _chunking.coordinate_values(directional_derivative, size, chunk_size, axis_name)
  return _checks.with_aux(unflatten(grad), loss_fn, (params,), has_aux)
