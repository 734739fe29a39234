"""The second-order T1-T2 hypergradient (Luketina et al., 2016), EvoGrad's baseline."""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import _checks
from .evograd import _check_bilevel


def t1_t2(train_loss: Callable[[Any, Any], jax.Array],
          val_loss: Callable[[Any, Any], jax.Array], params: Any, hparams: Any,
          key: jax.Array | None = None, *, inner_lr: float) -> Any:
  """One-step lookahead hypergradient (evograd.txt Table 1, left column):

      theta'(lambda) = theta - eta * d train_loss(theta, lambda) / d theta
      result = d val_loss(theta'(lambda), lambda) / d lambda
             = dl_V/dlambda - eta * dl_V/dtheta' . d^2 l_T / dtheta dlambda

  computed by reverse mode through the inner gradient step (second order).

  Returns:
    A pytree shaped and typed like ``hparams``.
  """
  del key
  _checks.positive("inner_lr", inner_lr)
  _check_bilevel(train_loss, params, hparams, val_loss)

  def objective(h):
    g = jax.grad(train_loss)(params, h)
    adapted = jax.tree_util.tree_map(lambda p, d: p - inner_lr * d, params, g)
    return val_loss(adapted, h)

  return jax.grad(objective)(hparams)
