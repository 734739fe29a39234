"""The second-order T1-T2 hypergradient, EvoGrad's baseline.

Luketina, Berglund, Greff & Raiko (2016), "Scalable Gradient-Based Tuning of
Continuous Regularization Hyperparameters", ICML, arXiv:1511.06727.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from .. import _checks


def t1_t2(train_loss: Callable[[Any, Any], jax.Array],
          val_loss: Callable[[Any, Any], Any], params: Any, hparams: Any,
          key: jax.Array | None = None, *, inner_lr: float, has_aux: bool = False) -> Any:
  """One-step lookahead hypergradient (EvoGrad's Table 1, left column):

      theta'(lambda) = theta - eta * d train_loss(theta, lambda) / d theta
      result = d val_loss(theta'(lambda), lambda) / d lambda
             = dl_V/dlambda - eta * dl_V/dtheta' . d^2 l_T / dtheta dlambda

  computed by reverse mode through the inner gradient step (second order).
  Its scale is the exact hypergradient of the one-step lookahead; EvoGrad's
  mean equals it at ``eta = sigma^2 (K - 1) / (K tau)`` (see ``evograd``).

  Args:
    train_loss: ``(params, hparams) -> scalar``.
    val_loss: ``(params, hparams) -> scalar`` (``-> (scalar, aux)`` with
      ``has_aux``), evaluated at theta'.
    params: theta, the model's current parameters (pytree of floats).
    hparams: lambda (pytree of floats).
    key: unused; accepted for the common hypergradient signature.
    inner_lr: eta, the lookahead step (> 0).
    has_aux: ``val_loss`` returns ``(loss, aux)``; the result is
      ``(hypergrads, aux)``.

  Returns:
    A pytree shaped and typed like ``hparams``; with ``has_aux``,
    ``(hypergrads, aux)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators
    >>> train = lambda p, h: jnp.sum((p["w"] - 1.0) ** 2) + h["l2"] * jnp.sum(p["w"] ** 2)
    >>> val = lambda p, h: jnp.sum((p["w"] - 2.0) ** 2)
    >>> g = estimators.t1_t2(train, val, {"w": jnp.ones(2)}, {"l2": jnp.array(0.1)},
    ...                      inner_lr=0.1)
    >>> bool(g["l2"] > 0)     # more weight decay moves w away from the validation optimum
    True

  References:
    Luketina, Berglund, Greff & Raiko 2016, "Scalable Gradient-Based Tuning of
    Continuous Regularization Hyperparameters", arXiv:1511.06727.
  """
  del key
  _checks.positive("inner_lr", inner_lr)
  _checks.bilevel(train_loss, params, hparams, val_loss, has_aux)

  def objective(h):
    g = jax.grad(train_loss)(params, h)
    adapted = jax.tree_util.tree_map(lambda p, d: p - inner_lr * d, params, g)
    return val_loss(adapted, h)

  return jax.grad(objective, has_aux=has_aux)(hparams)
