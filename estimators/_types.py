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
  like ``params``; ``(grads, aux)`` with ``has_aux=True``).

  Every estimator of the ``"first_order"`` family has this type, so code
  written against it takes any of them; hyperparameters are keyword-only.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> def sgd_step(estimate: estimators.FirstOrderEstimator, loss_fn, params, key, **kw):
    ...   return params - 0.1 * estimate(loss_fn, params, key, **kw)
    >>> loss_fn = lambda w: jnp.sum(w ** 2)
    >>> w, key = jnp.ones(2), jax.random.PRNGKey(0)
    >>> [round(v, 4) for v in sgd_step(estimators.backprop, loss_fn, w, key).tolist()]
    [0.8, 0.8]
    >>> fd = sgd_step(estimators.finite_difference, loss_fn, w, key, scheme="central")
    >>> [round(v, 4) for v in fd.tolist()]
    [0.8, 0.8]
  """

  def __call__(self, loss_fn: LossFn, params: Params, key: jax.Array, /,
               **hyperparameters: Any) -> Any: ...


class HypergradientEstimator(Protocol):
  """``(train_loss, val_loss, params, hparams, key, **hyperparameters) ->
  hypergrads`` (shaped like ``hparams``).

  ``train_loss`` and ``val_loss`` take ``(params, hparams)``; every estimator
  of the ``"hypergradient"`` family has this type.

  Examples:
    >>> import jax
    >>> from metagrad import estimators
    >>> from metagrad.tasks import evograd_toy
    >>> def hypergradient(estimate: estimators.HypergradientEstimator, lam, **kw):
    ...   x = evograd_toy.optimal_x(lam)
    ...   return estimate(evograd_toy.train_loss, evograd_toy.val_loss, x, lam,
    ...                   jax.random.PRNGKey(0), **kw)
    >>> round(float(hypergradient(estimators.t1_t2, 3.0, inner_lr=0.1)), 4)  # 0.1 (2 x*)(1 - 2 x*)
    0.025
  """

  def __call__(self, train_loss: BilevelLossFn, val_loss: BilevelLossFn, params: Params,
               hparams: Params, key: jax.Array, /, **hyperparameters: Any) -> Any: ...


class UnrolledEstimator(Protocol):
  """``(unroll, params, state, key, **hyperparameters) -> (grads, state)``,
  with ``state`` from ``init_state``.

  ``unroll(params, inner_state, key, window) -> (loss, inner_state)`` runs one
  truncation window; every estimator of the ``"unrolled"`` family has this
  type.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> def unroll(params, inner, key, window):
    ...   x = inner["x"] - params["lr"] * 2.0 * inner["x"]      # one SGD step on x^2
    ...   return jnp.sum(x ** 2), {"x": x}
    >>> init_inner = lambda key: {"x": jnp.ones(2)}
    >>> def one_window(estimate: estimators.UnrolledEstimator, **kw):
    ...   state = estimators.init_state(estimate, init_inner, jax.random.PRNGKey(0),
    ...                                 num_particles=2, num_windows=4)
    ...   return estimate(unroll, {"lr": jnp.array(0.1)}, state, jax.random.PRNGKey(1),
    ...                   init_inner=init_inner, **kw)
    >>> grads, state = one_window(estimators.truncated_backprop)
    >>> round(float(grads["lr"]), 4), state.window.tolist()   # d/dlr 2 (1 - 2 lr)^2 = -8 (1 - 2 lr)
    (-6.4, [1, 1])
  """

  def __call__(self, unroll: UnrollFn, params: Params, state: Any, key: jax.Array, /,
               **hyperparameters: Any) -> Tuple[Any, Any]: ...


# The positional parameters of each convention, in order (checked against every
# registered estimator by tests/test_registry.py).
POSITIONAL = {
    "first_order": ("loss_fn", "params", "key"),
    "hypergradient": ("train_loss", "val_loss", "params", "hparams", "key"),
    "unrolled": ("unroll", "params", "state", "key"),
}
