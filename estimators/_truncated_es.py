"""Truncated evolution strategies (TES) over unrolled windows.

The truncated-ES baseline of Vicol, Metz & Sohl-Dickstein (2021), "Unbiased
Gradient Estimation in Unrolled Computation Graphs with Persistent Evolution
Strategies" (PES), ICML, arXiv:2112.13835, Algorithm 1; reference code:
learned_optimization's ``outer_trainers/truncated_es.py`` (``TruncatedES``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import _antithetic, _unroll


def truncated_es(unroll: Callable, params: Any, state: _unroll.UnrollState, key: jax.Array, *,
                 sigma: float, init_inner: Callable | None = None,
                 carry: str = "unperturbed", chunk_size: int | str | None = "auto",
                 axis_name: str | None = None) -> tuple[Any, _unroll.UnrollState]:
  """``g = 1/(2 sigma n) sum_u (L_w(s_u, theta + sigma z_u) - L_w(s_u, theta - sigma z_u)) z_u``

  with fresh ``z_u ~ N(0, I)`` every window, for each antithetic pair u whose
  members both start the window from the pair's one inner state ``s_u`` (PES
  paper, Algorithm 1). It is the antithetic ES estimate of the gradient of one
  window's smoothed loss with ``s_u`` held fixed: like truncated backprop it
  ignores how ``theta`` shaped ``s_u`` in earlier windows, so it is
  **biased** (its mean is TBPTT's on a quadratic window loss), but it needs no
  derivatives and its variance is that of ES on one window: the loss
  difference shrinks with sigma. Memory flat in the horizon.

  Args:
    unroll: ``(params, inner_state, key, window) -> (loss, inner_state)``.
    params: the meta-parameters (pytree of floats).
    state: from ``estimators.init_state(truncated_es, ...)`` (one inner state
      per pair).
    key: PRNG key of this call; pair u's noise is ``fold_in(key, u)``.
    sigma: perturbation scale (> 0).
    init_inner: ``key -> inner_state``, to reset pairs at the horizon
      (required when the state's horizon is finite).
    carry: the state a pair carries into the next window:
      ``"unperturbed"`` (default, Algorithm 1: ``s <- unroll(s, theta)``, a
      third unroll per pair and window) or ``"positive"`` (the ``+`` member's
      state, as learned_optimization's ``TruncatedES``: two unrolls, the
      trajectory drifts by sigma).
    chunk_size: pairs unrolled at once (``"auto"``: measured).
    axis_name: inside ``shard_map``/``pmap``, the axis pairs are split over.

  Returns:
    ``(grads, state)``: NaN grads if no pair's losses were finite.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> decay = lambda p, s, k, w: (jnp.sum(s ** 2), s * p["a"])    # never reset: no init_inner
    >>> params = {"a": jnp.full(3, 0.5)}
    >>> state = estimators.init_state(estimators.truncated_es, lambda k: jnp.ones(3),
    ...                               jax.random.PRNGKey(0), num_particles=4, params=params)
    >>> g, state = estimators.truncated_es(decay, params, state, jax.random.PRNGKey(1), sigma=0.1)
    >>> g["a"].shape, state.inner.shape                              # one state per pair
    ((3,), (2, 3))

  References:
    Vicol, Metz & Sohl-Dickstein 2021, "Unbiased Gradient Estimation in
    Unrolled Computation Graphs with Persistent Evolution Strategies",
    arXiv:2112.13835, Algorithm 1.
  """
  return _antithetic.estimate("truncated_es", unroll, params, state, key,
                              direction=_antithetic.fresh_noise, sigma=sigma,
                              init_inner=init_inner, chunk_size=chunk_size,
                              axis_name=axis_name, carry=carry)
