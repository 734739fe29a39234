"""Persistent evolution strategies (PES).

Vicol, Metz & Sohl-Dickstein (2021), "Unbiased Gradient Estimation in Unrolled
Computation Graphs with Persistent Evolution Strategies", ICML,
arXiv:2112.13835, section 3 (antithetic estimator); reference code:
google-research/persistent_es and learned_optimization's ``truncated_pes``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import _antithetic, _unroll


def pes(unroll: Callable, params: Any, state: _unroll.UnrollState, key: jax.Array, *,
        sigma: float, init_inner: Callable | None = None,
        chunk_size: int | str | None = "auto",
        axis_name: str | None = None) -> tuple[Any, _unroll.UnrollState]:
  """``g = 1/(2 sigma n) sum_u (L_w(theta + sigma z_uw) - L_w(theta - sigma z_uw)) xi_uw``

  with a fresh ``z_uw ~ N(0, I)`` for every window w of pair u and
  ``xi_uw = sum_{v <= w} z_uv`` the perturbations the pair has accumulated
  since its inner problem started. Crediting the whole history makes the
  estimate **unbiased** for the gradient of the Gaussian-smoothed loss of the
  whole horizon (summed over its windows, for params held fixed), at the price
  of a variance that grows with the windows since the reset.

  What PES must store: every particle's inner state (as any truncated method)
  and each pair's ``xi`` -- either as a [pairs, D] accumulator
  (``init_state(..., accumulator="store")``: O(1) draws per window) or not at
  all (``"regenerate"``: xi is re-drawn from the pair's episode key, O(w) draws
  of D normals per window). The noise of window w of an episode is keyed by
  (episode, w), which is what makes it regenerable; both sum the windows
  perturbed since the reset (after ``stagger``, from the pair's first
  perturbed window), so they are one estimator: the same estimate for the
  same keys, to float rounding.

  Args:
    unroll: ``(params, inner_state, key, window) -> (loss, inner_state)``.
    params: the meta-parameters (pytree of floats).
    state: from ``estimators.init_state(pes, ..., params=params)``.
    key: PRNG key of this call (names the problems of reset particles).
    sigma: perturbation scale (> 0).
    init_inner: ``key -> inner_state``, to reset particles at the horizon
      (required when the state's horizon is finite).
    chunk_size: pairs unrolled at once (``"auto"``: measured).
    axis_name: inside ``shard_map``/``pmap``, the axis pairs are split over.

  Returns:
    ``(grads, state)``: NaN grads if no pair's losses were finite.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> unroll = lambda p, s, k, w: (jnp.sum((s - p["target"]) ** 2), 0.5 * s + 0.5 * p["target"])
    >>> init = lambda k: jnp.zeros(2)
    >>> params = {"target": jnp.ones(2)}
    >>> state = estimators.init_state(estimators.pes, init, jax.random.PRNGKey(0),
    ...                               num_particles=8, num_windows=4, params=params)
    >>> g, state = estimators.pes(unroll, params, state, jax.random.PRNGKey(1), sigma=0.1,
    ...                           init_inner=init)
    >>> g["target"].shape, state.accumulator.shape      # 4 pairs, D = 2
    ((2,), (4, 2))

  References:
    Vicol, Metz & Sohl-Dickstein 2021, "Unbiased Gradient Estimation in
    Unrolled Computation Graphs with Persistent Evolution Strategies",
    arXiv:2112.13835.
  """
  return _antithetic.estimate("pes", unroll, params, state, key,
                              direction=_antithetic.window_increment,
                              credit=_antithetic.accumulated_increments, sigma=sigma,
                              init_inner=init_inner, chunk_size=chunk_size,
                              axis_name=axis_name)
