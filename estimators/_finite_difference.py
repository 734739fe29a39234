"""Finite differences cast as ES (the ES-ProtoNet TPU paper, II-G)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import _chunking, _perturbation, _tree

SCHEMES = ("forward", "central")


def finite_difference(loss_fn: Callable[[Any], Any], params: Any,
                      key: jax.Array | None = None, *, step: float = 1e-3,
                      scheme: str = "forward", population: int | None = None,
                      chunk_size: int | str | None = "auto",
                      axis_name: str | None = None, has_aux: bool = False,
                      return_info: bool = False, num_coordinates: int | None = None) -> Any:
  """Coordinate-wise finite differences, one population member per coordinate.

  The paper's FD-as-ES (section II-G): candidate j is theta with coordinate j
  nudged by sigma_FD (``step``; the paper uses 0.001), plus one base
  candidate at theta whose loss replaces the mean reward of eq. (9):

      forward:  g_j = (L(theta + h e_j) - L(theta)) / h          (D + 1 evals)
      central:  g_j = (L(theta + h e_j) - L(theta - h e_j)) / 2h (2 D evals)

  **Scale.** ``g`` is the derivative estimate itself: exact on linear losses,
  O(h) (forward) / O(h^2) (central) accurate on smooth ones, so backprop
  learning rates transfer. Read literally, eq. (9) with displacements
  ``eps_j = h e_j``, sigma_FD in place of the reward std and the 1/n of
  a population of ``n = D + 1`` gives ``(h / n) * g``: a learning rate
  ``alpha`` from the paper's tables (e.g. Table VII) corresponds to
  ``alpha * h / n`` here with plain SGD, and transfers unchanged with Adam
  (scale-free).

  **Populations smaller than D.** The paper's FD runs use populations of
  512 to 32,768 whatever D; with ``population=n`` each call nudges ``n``
  distinct coordinates drawn from ``key`` and leaves the others' derivative
  at 0 (``g_j * D / n`` on the drawn ones, so ``E[g] = grad`` up to the
  O(h) error): an unbiased, sparse estimate at ``n + 1`` evaluations.

  The step actually realised in the parameters' dtypes is divided by;
  coordinates whose difference is not finite (or whose nudge rounds away in
  a low-precision leaf) get 0; if no coordinate's difference is finite, the
  whole estimate is NaN (the library's rule for sampling estimators: a
  training loop sees the failure instead of a silent zero step).

  Args:
    loss_fn: ``params -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    params: pytree of floating arrays (D elements in total).
    key: PRNG key; only used with ``population`` (else may be None).
    step: the nudge h (> 0).
    scheme: ``"forward"`` or ``"central"``.
    population: ``None`` (all D coordinates) or the number of coordinates
      drawn per call.
    chunk_size: candidates evaluated at once; peak memory O(chunk_size * D).
      ``"auto"`` (default) measures one candidate's memory and bounds the
      chunk (``return_info=True`` reports the plan); ``None`` evaluates all at once.
    axis_name: inside ``shard_map``/``pmap``, split coordinates over this axis
      (the key, if any, must be the same on every device).
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the result is
      ``(grads, aux)`` with ``aux`` at ``params``.
    return_info: also return a ``PopulationInfo`` (members evaluated, how
      many were non-finite and left out), last in the result tuple.
    num_coordinates: deprecated name of ``population`` (``DeprecationWarning``).

  Returns:
    A pytree shaped and typed like ``params``; with ``has_aux``, ``(grads, aux)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators
    >>> g = estimators.finite_difference(lambda p: jnp.sum(p["w"] ** 2),
    ...                                  {"w": jnp.array([1.0, -2.0])}, scheme="central")
    >>> [round(x, 2) for x in g["w"].tolist()]
    [2.0, -4.0]

  References:
    Sheng & He 2022, "Distributed Evolution Strategies Using TPUs for
    Meta-Learning", arXiv:2201.00093, section II-G.
  """
  _checks.positive("step", step)
  scheme = _checks.choice("scheme", scheme, SCHEMES)
  chunk_size = _checks.chunk_size(chunk_size, allow_auto=True)
  _checks.float_pytree("params", params)
  loss = _checks.scalar_loss("loss_fn", loss_fn, params, has_aux=has_aux)
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype
  num_coordinates = _checks.renamed("population", population, None, "num_coordinates",
                                    num_coordinates)
  if num_coordinates is not None:
    num_coordinates = _checks.integer("population", num_coordinates, minimum=1, maximum=size)
    _checks.prng_key("key", key)
  base_point = _tree.flatten(unflatten(theta))[0]

  def flat_loss(vector):
    return loss(unflatten(vector)).astype(dtype)

  # Nudged coordinates as the parameters' own dtypes can represent them: the
  # realised step (not the nominal one) is divided by, which keeps FD exact on
  # linear losses despite rounding of theta + h.
  plus = _tree.flatten(unflatten(theta + step))[0]
  minus = _tree.flatten(unflatten(theta - step))[0]

  def loss_with(j, values):
    return flat_loss(base_point.at[j].set(values[j]))

  if scheme == "forward":
    base = flat_loss(base_point)
    difference = lambda j: (loss_with(j, plus) - base, plus[j] - base_point[j])
  else:
    difference = lambda j: (loss_with(j, plus) - loss_with(j, minus),
                            plus[j] - minus[j])

  def derivative(j):
    rise, run = difference(j)
    return jnp.where(run != 0, rise / jnp.where(run != 0, run, 1.0), 0.0)

  if num_coordinates is None:
    grad, plan = _chunking.coordinate_values(derivative, size, chunk_size, axis_name)
  else:
    drawn = jax.random.choice(key, size, (num_coordinates,), replace=False)
    values, plan = _chunking.coordinate_values(lambda i: derivative(drawn[i]), num_coordinates,
                                               chunk_size, axis_name)
    grad = jnp.zeros((size,), dtype).at[drawn].set(values * (size / num_coordinates))
  finite = jnp.isfinite(grad)
  # Non-finite differences are left out (0); if none is finite, NaN (never a silent zero).
  grads = unflatten(jnp.where(finite, grad, jnp.where(finite.any(), 0.0, jnp.nan)))
  members = size if num_coordinates is None else num_coordinates
  info = _perturbation.PopulationInfo(members, (~finite).sum().astype(jnp.int32), plan)
  return _checks.with_aux(grads, loss_fn, (params,), has_aux, info, return_info)
