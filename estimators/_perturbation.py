"""The Gaussian-perturbation engine behind ``es`` and ``es_wsr``: members
drawn by key (``_noise``), evaluated in chunks (``_chunking``, sized by
``_auto_chunk``) across devices (``_sharding``), weighted by fitness shaping
(``_shaping``) and summed into one gradient; and the population report every
sampling estimator returns with ``return_info=True``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import _auto_chunk, _chunking, _noise, _shaping, _sharding, _tree

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PopulationInfo:
  """What a sampling estimator's population did (``return_info=True``).

  Attributes:
    members: the number of members evaluated (population, directions or
      coordinates), over all devices (static).
    nonfinite: int32 scalar, how many of them had a non-finite value and
      were left out; ``nonfinite == members`` means the estimate is NaN.
    chunk_plan: how the members were evaluated (``ChunkPlan``: units per
      device, chunk size and, for ``chunk_size="auto"``, the measured cost of
      one unit that decided it); static, so ``jax.eval_shape`` of the
      estimator shows it without running anything. ``None`` for estimators
      that do not chunk.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> loss_fn = lambda w: jnp.sum(w ** 2) / jnp.sum(w)      # not finite where sum(w) = 0
    >>> grads, info = estimators.es(loss_fn, jnp.ones(3), jax.random.PRNGKey(0), sigma=0.1,
    ...                             population=16, chunk_size=4, return_info=True)
    >>> info.members, int(info.nonfinite), info.chunk_plan.chunk_size
    (16, 0, 4)
  """
  members: int = dataclasses.field(metadata=dict(static=True))
  nonfinite: Array
  chunk_plan: _auto_chunk.ChunkPlan | None = dataclasses.field(default=None,
                                                               metadata=dict(static=True))


def check_arguments(key, sigma, population, antithetic, chunk_size, noise,
                    params) -> tuple[int, bool, Any, str]:
  """The argument checks ``es`` and ``es_wsr`` share; returns the normalised
  ``(population, antithetic, chunk_size, noise)``."""
  _checks.prng_key("key", key)
  _checks.positive("sigma", sigma)
  antithetic = _checks.boolean("antithetic", antithetic)
  population = _checks.population(population, antithetic=antithetic)
  chunk_size = _checks.chunk_size(chunk_size, allow_auto=True)
  noise = _checks.choice("noise", noise, _noise.NOISES)
  _checks.float_pytree("params", params)
  return population, antithetic, chunk_size, noise


def perturbation_gradient(loss_fn: Callable, params, key: Array, *,
                          sigma, population: int, antithetic: bool, shaping: str,
                          noise_scale: Callable[[Array], Array],
                          chunk_size: int | None, axis_name: str | None,
                          noise: str = "normal"):
  """``noise_scale(n) * sum_i w_i z_i`` over members ``L_i = loss_fn(theta + sigma z_i)``,
  ``z_i ~ N(0, I)``, with fitness-shaped weights ``w`` and ``n`` members kept:

  * ``"none"``: ``w_i = L_i``; with antithetic pairs a pair with a non-finite
    member is dropped whole (n counts members of kept pairs);
  * ``"standardize"``: ``w_i = (L_i - mean) / std`` over the finite members
    (0 if the std is at rounding level: all-equal losses give zero);
  * ``"centered_rank"``: ranks of the finite members mapped onto [-0.5, 0.5].

  If no member is finite the result is NaN: the library's one rule for
  sampling estimators (non-finite members are left out; none left is a
  failure a training loop must see, never a silent zero step).

  The common skeleton of every Gaussian-perturbation estimator. The unit of
  work is a noise draw ``z_u``: one member, or with antithetic sampling the
  pair (theta + sigma z_u, theta - sigma z_u). The two linear shapings are
  summed in the same pass that evaluates the members, so each direction is
  drawn once: with member masks m (finite), signs c (+1, -1 in a pair) and any
  shift r, ``sum_i w_i z_i = a (sum_u sum_s c_s m_us (L_us - r) z_u - (b - r)
  sum_u sum_s c_s m_us z_u)`` for ``w = a m (L - b)``; r is the first chunk's
  mean loss, which keeps the subtraction well conditioned. Ranks need every
  loss first, so ``"centered_rank"`` draws each direction twice (loss pass,
  sum pass) when the members take several chunks; when they fit in one, the
  chunk's directions serve both passes. Members, chunks and devices never
  change a member's noise, only the float summation order.

  ``noise="normal"`` draws ``z_u`` from ``fold_in(key, u)``; ``noise="table"``
  draws one table of ``D + max(D, 65,536)`` normals per call and gives unit u
  the D-slice at a keyed offset: D + slack draws instead of D per unit. Each
  direction is still exactly N(0, I) and distinct units use distinct table
  entries at every coordinate (so E[z_u . z_v] = 0), but the directions are
  shifted copies of one another rather than independent (the OpenAI-ES
  trade-off, tested in tests/test_population.py).
  """
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype
  sigma = jnp.asarray(sigma, dtype)
  signs = jnp.asarray([1.0, -1.0] if antithetic else [1.0], dtype)
  per_unit = signs.shape[0]

  if noise == "table":
    table = _noise.noise_table(key, size, dtype)
    draw = lambda u: _noise.table_direction(table, key, u, size)
  else:
    draw = lambda u: _noise.gaussian_direction(key, u, size, dtype, antithetic=False)

  def member_losses(z):
    return jnp.stack([loss_fn(unflatten(theta + s * sigma * z)).astype(dtype)
                      for s in ((1.0, -1.0) if antithetic else (1.0,))])

  unit_losses = lambda u: member_losses(draw(u))
  units = _sharding.local_indices(population // per_unit, axis_name, per_unit=per_unit)
  n_local = units.shape[0]
  plan = _auto_chunk.resolve(chunk_size, n_local, size, dtype, unit_losses, units[0],
                             loss_only=(member_losses, (jnp.zeros((size,), dtype),)))
  chunk = n_local if plan.chunk_size is None else min(plan.chunk_size, n_local)

  if shaping == "centered_rank":
    # One chunk: its directions are alive anyway, so they serve both passes
    # (no second draw, no extra memory); several: drawn again in the sum pass.
    stored = jax.vmap(draw)(units) if chunk >= n_local else None
    local = (jax.vmap(member_losses)(stored) if stored is not None
             else _chunking.map_members(unit_losses, units, chunk))
    losses = _sharding.gather(local, axis_name).reshape(-1)
    finite = jnp.isfinite(losses)
    weights = _shaping.centered_ranks(losses, finite) * noise_scale(finite.sum().astype(dtype))
    unit_weights = weights.reshape(-1, per_unit) @ signs
    local_weights = unit_weights[units] if axis_name is not None else unit_weights
    grad = _chunking.weighted_direction_sum(draw, local_weights, units, size, dtype, chunk,
                                  axis_name, directions=stored)
    info = PopulationInfo(population, (~finite).sum().astype(jnp.int32), plan)
    return unflatten(jnp.where(finite.any(), grad, jnp.nan)), info

  pair_mask = shaping == "none" and antithetic
  idx, valid = _chunking.pad_chunks(units, chunk)

  def evaluate_chunk(ids, ok):
    """Losses, masks and the chunk's two direction sums (S1 before the shift)."""
    z = jax.vmap(draw)(ids)                                    # [chunk, D]
    losses = jax.vmap(member_losses)(z)                        # [chunk, per_unit]
    mask = jnp.isfinite(losses) & ok[:, None]
    if pair_mask:
      mask = jnp.broadcast_to(mask.all(axis=1, keepdims=True), mask.shape)
    return z, jnp.where(ok[:, None], losses, jnp.nan), mask

  def sums(z, losses, mask, shift):
    coeff = jnp.where(mask, losses - shift, 0.0) @ signs       # [chunk]
    count = mask.astype(dtype) @ signs
    return coeff @ z, count @ z

  z0, losses0, mask0 = evaluate_chunk(idx[0], valid[0])
  shift = jnp.where(mask0.any(), jnp.where(mask0, losses0, 0.0).sum()
                    / jnp.maximum(mask0.sum(), 1), 0.0)
  s1, s0 = sums(z0, losses0, mask0, shift)

  def body(carry, chunk_args):
    s1, s0 = carry
    z, losses, mask = evaluate_chunk(*chunk_args)
    a, b = sums(z, losses, mask, shift)
    return (s1 + a, s0 + b), (losses, mask)

  (s1, s0), (losses_rest, mask_rest) = jax.lax.scan(body, (s1, s0), (idx[1:], valid[1:]))
  local_losses = jnp.concatenate([losses0, losses_rest.reshape(-1, per_unit)])[:n_local]
  local_mask = jnp.concatenate([mask0, mask_rest.reshape(-1, per_unit)])[:n_local]
  losses = _sharding.gather(local_losses, axis_name).reshape(-1)
  mask = _sharding.gather(local_mask.astype(jnp.int32), axis_name).reshape(-1) > 0
  kept = mask.sum().astype(dtype)
  if shaping == "none":
    scale, offset = jnp.asarray(1.0, dtype), -shift          # b = 0: b - r = -r
  else:
    # Statistics of the shifted losses: summing P losses near a large value in
    # float32 would misplace the mean by a sizeable fraction of their spread.
    shifted = jnp.where(mask, losses - shift, 0.0)
    offset = shifted.sum() / jnp.maximum(kept, 1.0)          # b - r = mean - r
    std = jnp.sqrt((jnp.where(mask, shifted - offset, 0.0) ** 2).sum() / jnp.maximum(kept, 1.0))
    tiny = jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(shift + offset), 1.0) * 4
    scale = jnp.where(std > tiny, 1.0 / jnp.where(std > tiny, std, 1.0), 0.0)
  direction_sum = scale * (s1 - offset * s0)
  grad = _sharding.allreduce(direction_sum * noise_scale(kept), axis_name)
  info = PopulationInfo(population, (~jnp.isfinite(losses)).sum().astype(jnp.int32), plan)
  return unflatten(jnp.where(kept > 0, grad, jnp.nan)), info   # no finite member: NaN, not zero
