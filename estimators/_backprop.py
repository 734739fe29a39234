"""Reverse-mode gradient: the exact reference every estimator is tested against."""

from __future__ import annotations

from typing import Any, Callable

import jax

from .. import _checks


def backprop(loss_fn: Callable[[Any], Any], params: Any, key: jax.Array | None = None, *,
             has_aux: bool = False) -> Any:
  """Exact gradient ``dL/dparams`` by reverse-mode autodiff (``jax.grad``).

  Memory grows with everything ``loss_fn`` computes (for a meta-objective:
  with the number of inner steps, the ES-ProtoNet TPU paper
  section II-E, Omega_BP = g * l); see ``models.adapt``'s
  ``checkpoint_every`` for O(sqrt T) memory at the price of one more forward
  pass, and ``metagrad.estimators.implicit`` for memory independent of T.

  Args:
    loss_fn: ``params -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    params: pytree of floating arrays.
    key: unused; accepted for the common ``(loss_fn, params, key)`` signature.
    has_aux: as in ``jax.grad``: ``loss_fn`` returns ``(loss, aux)`` and the
      result is ``(grads, aux)``.

  Returns:
    A pytree shaped and typed like ``params`` (with ``has_aux``: ``(grads, aux)``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators
    >>> g = estimators.backprop(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.array([1.0, -2.0])})
    >>> g["w"].tolist()
    [2.0, -4.0]

  References:
    Baydin, Pearlmutter, Radul & Siskind 2018, "Automatic Differentiation in
    Machine Learning: a Survey", arXiv:1502.05767.
  """
  del key
  _checks.float_pytree("params", params)
  _checks.scalar_loss("loss_fn", loss_fn, params, has_aux=has_aux)
  return jax.grad(loss_fn, has_aux=has_aux)(params)
