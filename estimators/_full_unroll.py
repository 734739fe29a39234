"""One whole horizon as a plain loss, to compare the first-order estimators with
the unrolled ones on the same problem."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from ._unroll import data_key, raw_key


def full_unroll(unroll: Callable, init_inner: Callable, key: jax.Array, *,
                num_windows: int) -> Callable[[Any], jax.Array]:
  """``params -> sum_w L_w``: one whole horizon of a fresh inner problem.

  The inner problem and the window data keys are those a particle whose
  episode key is ``key`` would see, so the first-order estimators
  (``backprop``, ``es``, ``forward_mode``...) can be compared with the
  unrolled ones on the same problem: memory of ``backprop`` through it grows
  with the horizon, the others' does not.

  Args:
    unroll: ``(params, inner_state, key, window) -> (loss, inner_state)``.
    init_inner: ``key -> inner_state``.
    key: the episode key (fixes the inner problem and its data keys).
    num_windows: the horizon in windows.

  Returns:
    ``params -> scalar``, the sum of the horizon's window losses.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> unroll = lambda p, s, k, w: (jnp.sum((s - p["target"]) ** 2), 0.5 * s + 0.5 * p["target"])
    >>> loss = estimators.full_unroll(unroll, lambda k: jnp.zeros(2), jax.random.PRNGKey(0),
    ...                               num_windows=3)
    >>> float(loss({"target": jnp.ones(2)}))       # windows at s = 0, 0.5, 0.75
    2.625

  References:
    Vicol, Metz & Sohl-Dickstein 2021, "Unbiased Gradient Estimation in
    Unrolled Computation Graphs with Persistent Evolution Strategies",
    arXiv:2112.13835 (the objective the unrolled estimators estimate).
  """
  num_windows = _checks.count("num_windows", num_windows)
  key = raw_key("key", key)

  def loss_fn(params):
    inner = init_inner(jax.random.fold_in(key, 2))

    def body(carry, w):
      inner, total = carry
      loss, inner = unroll(params, inner, data_key(key, w), w)
      return (inner, total + loss), None

    (_, total), _ = jax.lax.scan(body, (inner, jnp.zeros((), jnp.float32)),
                                 jnp.arange(num_windows))
    return total
  return loss_fn
