"""ES with Weighted Standardized Rewards (WSR).

The ES-ProtoNet TPU paper (distributed evolutionary meta-learning of
Prototypical Networks on TPUs), eq. (9): the gradient estimator its authors
train Prototypical Networks with on TPU pods
(the ES-ProtoNet TPU paper of this project's reading list).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import _perturbation


def es_wsr(loss_fn: Callable[[Any], jax.Array], params: Any, key: jax.Array, *,
           sigma: float = 0.01, population: int = 64, antithetic: bool = False,
           chunk_size: int | str | None = "auto", axis_name: str | None = None,
           noise: str = "normal", has_aux: bool = False,
           return_info: bool = False) -> Any:
  """Exactly eq. (9) of the ES-ProtoNet TPU paper:

      eps_i ~ N(0, sigma^2 I),   L_i = L(theta + eps_i),
      w_i = (L_i - mean_j L_j) / std_j L_j,
      g = (1/P) sum_i w_i eps_i.

  Unlike ``es`` there is no ``1/sigma``: the displacement ``eps_i`` itself
  carries the scale ``sigma``, so the paper's step sizes (alpha = 1 with
  sigma = 0.01, alpha = 10 with sigma = 0.1, Table I) transfer unchanged to
  ``theta <- theta - alpha * g``. The paper writes rewards F = -L and ascends;
  here ``w`` is built from the loss, so ``g`` points uphill in the loss and is
  used like a gradient (subtracted), as for every estimator in this package.

  Scale: the standardised weights make ``g`` about ``sigma * c * grad/|grad|``
  per unit of alignment, whatever the loss scale (``|g|`` ~ ``sigma`` times a
  constant of order 1, not ``|grad L|``): use the paper's step sizes, not a
  backprop learning rate.

  Non-finite losses get weight 0 and are excluded from mean, std and P; if
  none is finite the gradient is NaN (never a silent zero); if all losses
  are equal (std = 0) it is exactly zero (a flat landscape, not a failure).

  Args:
    loss_fn: ``params -> scalar``.
    params: pytree of floating arrays.
    key: PRNG key; member i's noise comes from ``fold_in(key, i)``.
    sigma: standard deviation of the displacements (> 0).
    population: P (>= 2; even when ``antithetic``).
    antithetic: use +/- pairs (not in the paper; off by default).
    chunk_size: noise draws evaluated at once (with ``antithetic``, a draw is
      a +/- pair); peak memory O(chunk_size * D). ``None``: all at once.
      ``"auto"`` (default): measured -- all at once when it fits, else chunks
      bounded by cache-sized noise and one member's compiled temporaries,
      two at a time for large compute-bound members (XLA's memory and cost
      analysis of one member; ``return_info=True`` reports the plan). Chunking
      never changes a member's noise, only float summation order.
    axis_name: inside ``shard_map``/``pmap``, split the population over this
      axis (section II-F: each core evaluates its members, the gradient is
      all-reduced). The key must be the same on every device.
    noise: ``"normal"`` (default): member i's direction from ``fold_in(key, i)``;
      ``"table"``: slices at keyed offsets of one fresh Gaussian table per call
      (OpenAI-ES's noise table): ~P/2 times fewer normal draws, directions
      marginally N(0, I) but shifted copies of one another, not independent.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the result is
      ``(grads, aux)`` with ``aux`` evaluated once at the unperturbed params.
    return_info: also return a ``PopulationInfo`` (members evaluated, how
      many were non-finite and left out), last in the result tuple.

  Returns:
    A pytree shaped and typed like ``params``; with ``has_aux``, ``(grads, aux)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> g = estimators.es_wsr(loss, {"w": jnp.array([1.0, -2.0])}, jax.random.PRNGKey(0),
    ...                       population=1024)
    >>> direction = g["w"] / jnp.linalg.norm(g["w"])     # scale-free: sigma sqrt(1 + D/P)
    >>> bool(direction @ jnp.array([2.0, -4.0]) / jnp.sqrt(20.0) > 0.9)
    True

  References:
    Sheng & He 2022, "Distributed Evolution Strategies Using TPUs for
    Meta-Learning", arXiv:2201.00093, eq. (9).
  """
  population, antithetic, chunk_size, noise = _perturbation.check_arguments(
      key, sigma, population, antithetic, chunk_size, noise, params)
  loss = _checks.scalar_loss("loss_fn", loss_fn, params, has_aux=has_aux)
  # eps_i = sigma * z_i, so (1/P) sum w_i eps_i = (sigma / P) sum w_i z_i.
  grads, info = _perturbation.perturbation_gradient(
      loss, params, key, sigma=sigma, population=population,
      antithetic=antithetic, shaping="standardize",
      noise_scale=lambda n: sigma / jnp.maximum(n, 1),
      chunk_size=chunk_size, axis_name=axis_name, noise=noise)
  return _checks.with_aux(grads, loss_fn, (params,), has_aux, info, return_info)
