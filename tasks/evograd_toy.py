"""The 1-D bilevel problem of EvoGrad (arXiv:2106.10575) section 4.1.

A training loss with an L2 penalty of weight lambda and a validation loss
that prefers x = 1/2: the optimum of the training loss is
``x*(lambda) = 1 / (1 + lambda)``, so the best lambda is 1, and the exact
hypergradient is known in closed form to test estimators against.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["train_loss", "val_loss", "optimal_x", "true_hypergradient"]


def train_loss(x, lam):
  """``f_T(x) = (x - 1)^2 + lambda ||x||^2``, summed over the entries of ``x``.

  Args:
    x: the model parameter (any shape).
    lam: the hyperparameter lambda (a scalar or broadcastable to ``x``).

  Returns:
    A scalar.

  Examples:
    >>> from metagrad.tasks import evograd_toy
    >>> float(evograd_toy.train_loss(0.5, 1.0))
    0.5

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575,
    section 4.1.
  """
  return jnp.sum((x - 1.0) ** 2 + lam * x**2)


def val_loss(x, lam):
  """``f_V(x) = (x - 0.5)^2`` (no direct dependence on lambda).

  Args:
    x: the model parameter.
    lam: the hyperparameter (unused; the signature of a ``val_loss``).

  Returns:
    A scalar.

  Examples:
    >>> from metagrad.tasks import evograd_toy
    >>> float(evograd_toy.val_loss(0.5, 3.0))
    0.0

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575,
    section 4.1.
  """
  del lam
  return jnp.sum((x - 0.5) ** 2)


def optimal_x(lam):
  """``argmin_x f_T = 1 / (1 + lambda)``.

  Args:
    lam: the hyperparameter lambda (> -1).

  Returns:
    The training loss's minimiser, shaped like ``lam``.

  Examples:
    >>> from metagrad.tasks import evograd_toy
    >>> evograd_toy.optimal_x(1.0)
    0.5

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575,
    section 4.1.
  """
  return 1.0 / (1.0 + lam)


def true_hypergradient(lam):
  """Closed form ``d f_V(x*(lambda)) / d lambda = (lambda - 1) / (lambda + 1)^3``.

  Args:
    lam: the hyperparameter lambda (> -1).

  Returns:
    The exact hypergradient, shaped like ``lam``: zero at lambda = 1.

  Examples:
    >>> import jax
    >>> from metagrad.tasks import evograd_toy
    >>> exact = evograd_toy.true_hypergradient(3.0)
    >>> by_autodiff = jax.grad(lambda l: evograd_toy.val_loss(evograd_toy.optimal_x(l), l))(3.0)
    >>> round(float(exact), 6), round(float(by_autodiff), 6)
    (0.03125, 0.03125)

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575,
    section 4.1.
  """
  return (lam - 1.0) / (lam + 1.0) ** 3
