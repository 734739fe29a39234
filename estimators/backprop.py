"""Reverse-mode gradient: the exact reference every estimator is tested against."""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import _checks


def backprop(loss_fn: Callable[[Any], jax.Array], params: Any,
             key: jax.Array | None = None) -> Any:
  """Exact gradient ``dL/dparams`` by reverse-mode autodiff.

  Memory grows with everything ``loss_fn`` computes (for a meta-objective:
  with the number of inner steps, es_protonet_tpu.txt section II-E,
  Omega_BP = g * l).

  Args:
    loss_fn: ``params -> scalar``.
    params: pytree of floating arrays.
    key: unused; accepted for the common ``(loss_fn, params, key)`` signature.

  Returns:
    A pytree shaped and typed like ``params``.
  """
  del key
  _checks.float_pytree("params", params)
  _checks.scalar_loss("loss_fn", loss_fn, params)
  return jax.grad(loss_fn)(params)
