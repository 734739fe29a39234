"""Gaussian-smoothing evolution strategies: the NES / OpenAI-ES search gradient.

Salimans, Ho, Chen, Sidor & Sutskever (2017), "Evolution Strategies as a
Scalable Alternative to Reinforcement Learning", arXiv:1703.03864; Wierstra et
al. (2014), "Natural Evolution Strategies", JMLR 15.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import _perturbation, _shaping

SHAPINGS = _shaping.SHAPINGS


def es(loss_fn: Callable[[Any], jax.Array], params: Any, key: jax.Array, *,
       sigma: float = 0.01, population: int = 64, antithetic: bool = True,
       shaping: str = "none", chunk_size: int | str | None = "auto",
       axis_name: str | None = None, noise: str = "normal",
       has_aux: bool = False, return_info: bool = False) -> Any:
  """Search gradient ``g = 1/(n sigma) sum_i f(L_i) z_i``, ``z_i ~ N(0, I)``.

  ``L_i = L(theta + sigma z_i)``. With ``shaping="none"`` (``f`` = identity)
  this is the unbiased Monte-Carlo estimate of the gradient of the smoothed
  loss, ``grad E[L(theta + sigma z)] = E[L(theta + sigma z) z] / sigma``
  (the log-likelihood trick; ES-ProtoNet TPU paper, eq. 4-6).
  Its scale is the gradient's: with ``"none"`` it estimates the smoothed
  gradient itself, so a backprop learning rate transfers. ``"standardize"``
  uses ``f(L) = (L - mean) / std`` and ``"centered_rank"`` the ranks mapped to
  [-0.5, 0.5] (Salimans et al., 2017); both are biased and scale-free: their
  norm is about ``sqrt(D)/sigma`` times a constant whatever the loss scale, so
  they need their own (smaller) learning rate, or Adam.
  ``antithetic`` pairs ``z, -z`` (mirrored sampling) cut the variance.

  Non-finite losses: such members (with antithetic ``"none"``: their whole
  pair) get weight 0 and are left out of the shaping statistics; n counts the
  members kept; if none is finite the gradient is NaN (never a silent zero).

  Args:
    loss_fn: ``params -> scalar``.
    params: pytree of floating arrays.
    key: PRNG key; member i's noise comes from ``fold_in(key, i)``.
    sigma: smoothing scale (> 0).
    population: number of members P (even when ``antithetic``).
    antithetic: use +/- pairs.
    shaping: ``"none"``, ``"standardize"`` or ``"centered_rank"``.
    chunk_size: noise draws evaluated at once (with ``antithetic``, a draw is
      a +/- pair); peak memory O(chunk_size * D). ``None``: all at once.
      ``"auto"`` (default): measured -- all at once when it fits, else chunks
      bounded by cache-sized noise and one member's compiled temporaries,
      two at a time for large compute-bound members (XLA's memory and cost
      analysis of one member; ``return_info=True`` reports the plan). Chunking
      never changes a member's noise, only float summation order.
    axis_name: inside ``shard_map``/``pmap``, split the population over this
      axis; every device returns the same (all-reduced) gradient. The key must
      be the same on every device.
    noise: ``"normal"`` (default): member i's direction from ``fold_in(key, i)``;
      ``"table"``: slices at keyed offsets of one fresh Gaussian table per call
      (OpenAI-ES's noise table): ~P/2 times fewer normal draws, directions
      marginally N(0, I) but shifted copies of one another, not independent.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the result is
      ``(grads, aux)`` with ``aux`` evaluated once at the unperturbed params.
    return_info: also return a ``PopulationInfo`` (members evaluated, how
      many were non-finite and left out), last in the result tuple.

  Returns:
    A pytree shaped and typed like ``params`` (a gradient: subtract it to
    descend); with ``has_aux``, ``(grads, aux)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> g = estimators.es(loss, {"w": jnp.array([1.0, -2.0])}, jax.random.PRNGKey(0),
    ...                   sigma=0.1, population=4096)
    >>> bool(jnp.allclose(g["w"], jnp.array([2.0, -4.0]), atol=0.3))
    True

  References:
    Salimans, Ho, Chen, Sidor & Sutskever 2017, "Evolution Strategies as a
    Scalable Alternative to Reinforcement Learning", arXiv:1703.03864;
    Sheng & He 2022, "Distributed Evolution Strategies Using TPUs for
    Meta-Learning", arXiv:2201.00093.
  """
  population, antithetic, chunk_size, noise = _perturbation.check_arguments(
      key, sigma, population, antithetic, chunk_size, noise, params)
  shaping = _checks.choice("shaping", shaping, SHAPINGS)
  loss = _checks.scalar_loss("loss_fn", loss_fn, params, has_aux=has_aux)
  grads, info = _perturbation.perturbation_gradient(
      loss, params, key, sigma=sigma, population=population,
      antithetic=antithetic, shaping=shaping,
      noise_scale=lambda n: 1.0 / (jnp.maximum(n, 1) * sigma),
      chunk_size=chunk_size, axis_name=axis_name, noise=noise)
  return _checks.with_aux(grads, loss_fn, (params,), has_aux, info, return_info)
