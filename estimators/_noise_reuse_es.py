"""Noise-reuse evolution strategies (NRES).

Li, Harrison, Sohl-Dickstein, Smith & Metz (2023), "Noise-Reuse in Online
Evolution Strategies", NeurIPS, arXiv:2304.12180.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from . import _antithetic, _unroll


def noise_reuse_es(unroll: Callable, params: Any, state: _unroll.UnrollState, key: jax.Array, *,
                   sigma: float, init_inner: Callable | None = None,
                   chunk_size: int | str | None = "auto",
                   axis_name: str | None = None) -> tuple[Any, _unroll.UnrollState]:
  """``g = 1/(2 sigma n) sum_u (L_w(theta + sigma z_u) - L_w(theta - sigma z_u)) z_u``

  with one ``z_u ~ N(0, I)`` per pair per *episode*: every window of an inner
  problem reuses its pair's perturbation. Unbiased for the gradient of the
  horizon's loss smoothed by a single perturbation (for params held fixed),
  with lower variance than PES, whose accumulated noise grows with the
  windows (Li et al., 2023). Nothing but the inner states is stored: ``z_u``
  is regenerated from the pair's episode key.

  Args:
    unroll: ``(params, inner_state, key, window) -> (loss, inner_state)``.
    params: the meta-parameters (pytree of floats).
    state: from ``estimators.init_state(noise_reuse_es, ...)``.
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
    >>> def noisy(p, s, key, w):                  # a window's data comes from its key
    ...   s = s - 0.1 * (s - p["c"]) + 0.01 * jax.random.normal(key, s.shape)
    ...   return jnp.sum(s ** 2), s
    >>> start = lambda key: jax.random.normal(key, (2,))
    >>> state = estimators.init_state(estimators.noise_reuse_es, start, jax.random.PRNGKey(0),
    ...                               num_particles=4, params={"c": jnp.zeros(2)},
    ...                               num_windows=estimators.RandomHorizon(2, 5))
    >>> g, state = estimators.noise_reuse_es(noisy, {"c": jnp.zeros(2)}, state,
    ...                                      jax.random.PRNGKey(1), sigma=0.1, init_inner=start)
    >>> g["c"].shape, state.window.tolist()
    ((2,), [1, 1, 1, 1])

  References:
    Li, Harrison, Sohl-Dickstein, Smith & Metz 2023, "Noise-Reuse in Online
    Evolution Strategies", arXiv:2304.12180.
  """
  return _antithetic.estimate("noise_reuse_es", unroll, params, state, key,
                              direction=_antithetic.episode_noise, sigma=sigma,
                              init_inner=init_inner, chunk_size=chunk_size,
                              axis_name=axis_name)
