"""The three calling conventions, as ``typing.Protocol``s for annotations.

Every estimator is a pure function of one of these shapes with its
hyperparameters keyword-only; bind them with ``functools.partial`` and the
result still satisfies the protocol, so code written against, say,
``FirstOrderEstimator`` takes any of ``backprop``, ``forward_mode``, ``es``...
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Tuple

import jax

Params = Any          # a pytree of floating arrays
LossFn = Callable[[Params], jax.Array]
BilevelLossFn = Callable[[Params, Params], jax.Array]
# (params, inner_state, key, window) -> (loss, inner_state)
UnrollFn = Callable[[Params, Any, jax.Array, jax.Array], Tuple[jax.Array, Any]]


class FirstOrderEstimator(Protocol):
  """``(loss_fn, params, key, **hyperparameters) -> grads`` (``grads`` shaped
  like ``params``; ``(grads, aux)`` with ``has_aux=True``)."""

  def __call__(self, loss_fn: LossFn, params: Params, key: jax.Array, /,
               **hyperparameters: Any) -> Any: ...


class HypergradientEstimator(Protocol):
  """``(train_loss, val_loss, params, hparams, key, **hyperparameters) ->
  hypergrads`` (shaped like ``hparams``)."""

  def __call__(self, train_loss: BilevelLossFn, val_loss: BilevelLossFn, params: Params,
               hparams: Params, key: jax.Array, /, **hyperparameters: Any) -> Any: ...


class UnrolledEstimator(Protocol):
  """``(unroll, params, state, key, **hyperparameters) -> (grads, state)``,
  with ``state`` from ``init_state``."""

  def __call__(self, unroll: UnrollFn, params: Params, state: Any, key: jax.Array, /,
               **hyperparameters: Any) -> Tuple[Any, Any]: ...


# The positional parameters of each convention, in order (checked against every
# registered estimator by tests/test_registry.py).
POSITIONAL = {
    "first_order": ("loss_fn", "params", "key"),
    "hypergradient": ("train_loss", "val_loss", "params", "hparams", "key"),
    "unrolled": ("unroll", "params", "state", "key"),
}
