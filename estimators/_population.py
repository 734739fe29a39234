"""Population machinery shared by every sampling estimator, written once.

Three ideas keep populations cheap and reproducible:

* **Keyed members.** Member ``i``'s direction is regenerated on demand from
  ``fold_in(key, i)`` (antithetic pairs share ``fold_in(key, i // 2)`` with
  opposite signs). No ``P x D`` matrix is ever stored, and a member's noise
  does not depend on how the population is chunked or sharded.
* **Chunks.** Members are evaluated ``chunk_size`` at a time (``vmap`` inside
  ``scan``), so peak memory is ``O(chunk_size * D)`` instead of ``O(P * D)``.
* **Devices.** Under ``pmap``/``shard_map`` with ``axis_name``, each device
  takes a contiguous block of member indices; the per-member values (scalars)
  are all-gathered so every device computes the same weights, and the
  weighted direction sums are ``psum``-ed (the allreduce of the ES-ProtoNet TPU paper,
  section II-F). Because noise is keyed by the global index, the result for a
  key is the same on 1 or N devices, up to float summation order.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _normal

Array = jax.Array


def num_shards(axis_name: str | None) -> int:
  """Devices along ``axis_name`` (1 without one); a clear error when the axis
  is not bound by an enclosing ``pmap``/``shard_map``/``vmap``."""
  if axis_name is None:
    return 1
  try:
    return int(jax.lax.axis_size(axis_name))
  except NameError:
    raise ValueError(
        f"`axis_name` {axis_name!r} is not bound here: call the estimator inside "
        f"jax.shard_map / jax.pmap / jax.vmap with that axis name (the key must be the "
        f"same on every device), or pass axis_name=None.") from None


def local_indices(num_members: int, axis_name: str | None, *, name: str = "population",
                  per_unit: int = 1) -> Array:
  """Global member indices handled by this device (all of them off-axis).

  ``num_members`` units (antithetic pairs count as one unit of ``per_unit``
  = 2 members) must split evenly; the error names the argument ``name`` and
  the value the user passed (``num_members * per_unit``), not the unit count."""
  shards = num_shards(axis_name)
  if num_members % shards:
    given = num_members * per_unit
    what = " +/- pairs" if per_unit == 2 else ""
    raise ValueError(
        f"`{name}` ({given}) must split into{what} evenly over the {shards} device(s) of axis "
        f"{axis_name!r}: pass a multiple of {per_unit * shards}.")
  per_shard = num_members // shards
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per_shard
  return start + jnp.arange(per_shard)


def gather(values: Array, axis_name: str | None) -> Array:
  """Concatenates per-device member values in global member order.

  Each device writes its block into zeros and the blocks are ``psum``-ed:
  the sum adds exact zeros (bit-identical to an all-gather) and, unlike
  ``all_gather``, its result is typed as replicated, so callers may return it
  from ``shard_map`` with ``out_specs=P()``.
  """
  if axis_name is None:
    return values
  shards = num_shards(axis_name)
  block = values.shape[0]
  full = jnp.zeros((shards * block, *values.shape[1:]), values.dtype)
  full = jax.lax.dynamic_update_slice_in_dim(full, values, jax.lax.axis_index(axis_name) * block, 0)
  return jax.lax.psum(full, axis_name)


def allreduce(x: Array, axis_name: str | None) -> Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def map_members(fn: Callable[[Array], Array], indices: Array,
                chunk_size: int | None) -> Array:
  """``vmap(fn)(indices)`` evaluated ``chunk_size`` members at a time."""
  if chunk_size is None or chunk_size >= indices.shape[0]:
    return jax.vmap(fn)(indices)
  return jax.lax.map(fn, indices, batch_size=chunk_size)


def map_and_sum(fn: Callable, indices: Array, chunk_size: int | None):
  """``(stack of outs, sum of totals)`` over ``(outs, total) = fn(i)``, chunked:
  only ``chunk_size`` members' ``total`` (e.g. a gradient) are alive at a time,
  never the whole stack of them."""
  n = indices.shape[0]
  if chunk_size is None or chunk_size >= n:
    outs, totals = jax.vmap(fn)(indices)
    return outs, jax.tree_util.tree_map(lambda t: t.sum(0), totals)
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n
  idx = jnp.pad(indices, (0, pad), mode="edge").reshape(num_chunks, chunk_size)
  valid = (jnp.arange(num_chunks * chunk_size) < n).reshape(num_chunks, chunk_size)
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape[1:], s.dtype),
                                 jax.eval_shape(lambda i: jax.vmap(fn)(i)[1], idx[0]))

  def body(total, chunk):
    ids, ok = chunk
    outs, totals = jax.vmap(fn)(ids)
    masked = jax.tree_util.tree_map(
        lambda t: jnp.where(ok.reshape(-1, *([1] * (t.ndim - 1))), t, 0).sum(0), totals)
    return jax.tree_util.tree_map(jnp.add, total, masked), outs

  total, outs = jax.lax.scan(body, zeros, (idx, valid))
  outs = jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:])[:n], outs)
  return outs, total


# chunk_size="auto": one rule for every estimator that iterates over members
# (noise draws, JVP tangents or coordinates). On CPU a chunk is bounded twice:
# its directions should fit in about AUTO_NOISE_BYTES of cache (generating and
# consuming noise in cache-sized chunks made an es step at D = 1e6, P = 64 2x
# faster than drawing all 32 directions at once), and its members'
# intermediate values (XLA's compiled temporaries of one member, measured) in
# AUTO_MEMBER_BYTES. Members whose direction alone exceeds half the noise
# budget run two at a time when two fit in AUTO_PAIR_BYTES and their loss is
# compute-bound (at least AUTO_PAIR_FLOPS flops per parameter in XLA's cost
# analysis of one member): two members' matmuls then run as one batched
# product that keeps both cores busy (benchmark 9, D = 1e6 MLP on 256
# examples, ~512 flops per parameter: chunk 2 is 2x faster than chunk 1),
# while an elementwise loss (~7 flops per parameter, benchmark 3) only gains
# a second direction competing for cache (chunk 1 is 1.3x faster there).
# The budgets are calibrated on benchmark 9's grid (conv4-16 ProtoNet:
# chunk 1 best, 9.4 MiB per member; MLPs D = 1e3..1e6) and benchmark 3.
# On accelerators the whole population runs at once unless its temporaries
# would take more than AUTO_DEVICE_FRACTION of device memory.
AUTO_NOISE_BYTES = 2 * 2**20
AUTO_MEMBER_BYTES = 16 * 2**20
AUTO_PAIR_BYTES = 256 * 2**20
AUTO_PAIR_FLOPS = 64
AUTO_DEVICE_FRACTION = 0.25
_DEFAULT_DEVICE_BYTES = 8 * 2**30     # when a backend reports no memory limit
_member_cost_cache: dict = {}


class MemberCost(NamedTuple):
  """XLA's compiled view of one member's work: peak temporary bytes and
  flops (``None`` where the backend's cost analysis gives none)."""
  temp_bytes: int
  flops: float | None


def member_cost(fn: Callable, *args) -> MemberCost | None:
  """XLA's compiled temporary bytes and flops of ``fn(*args)``, one member's
  work.

  ``fn`` may close over values of an enclosing trace (an episode sampled
  inside the caller's ``jit``): its jaxpr's constants become abstract
  arguments, so nothing is evaluated. Cached per program and shapes; ``None``
  if the program cannot be compiled on its own (e.g. it uses a collective over
  an axis bound outside it).
  """
  try:
    closed = jax.make_jaxpr(fn)(*args)
    abstract = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    consts = [abstract(c) for c in closed.consts]
    flat_args = [abstract(a) for a in jax.tree_util.tree_leaves(args)]
    cache_key = (str(closed.jaxpr), tuple(consts), tuple(flat_args), jax.default_backend())
    if cache_key not in _member_cost_cache:
      run = lambda c, a: jax.core.eval_jaxpr(closed.jaxpr, c, *a)
      exe = jax.jit(run).lower(consts, flat_args).compile()
      if len(_member_cost_cache) > 256:
        _member_cost_cache.clear()
      _member_cost_cache[cache_key] = MemberCost(
          int(exe.memory_analysis().temp_size_in_bytes), _flops(exe))
    return _member_cost_cache[cache_key]
  except Exception:  # noqa: BLE001 - any failure falls back to the noise-only rule
    return None


def _flops(exe) -> float | None:
  try:
    analysis = exe.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    flops = (analysis or {}).get("flops")
    return None if flops is None or flops < 0 else float(flops)
  except Exception:  # noqa: BLE001 - cost analysis is optional per backend
    return None


def _device_bytes() -> int:
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - some backends do not implement memory_stats
    stats = {}
  return int(stats.get("bytes_limit", _DEFAULT_DEVICE_BYTES))


def auto_chunk_size(num_units: int, size: int, dtype, unit_bytes: int | None = None,
                    unit_flops: float | None = None) -> int | None:
  """The chunk ``chunk_size="auto"`` resolves to for ``num_units`` members of
  ``size``-element directions whose own work needs ``unit_bytes`` temporaries
  and ``unit_flops`` flops (unknown: ``None``, taken as compute-bound):
  ``None`` (all at once) when everything fits, else the largest power of two
  that fits (at least 1). See the constants above for the budgets."""
  direction = size * jnp.dtype(dtype).itemsize
  work = max(unit_bytes or 0, 1)
  if jax.default_backend() == "cpu":
    fit = min(AUTO_NOISE_BYTES // direction, AUTO_MEMBER_BYTES // work)
    compute_bound = unit_flops is None or unit_flops >= AUTO_PAIR_FLOPS * size
    if 2 * direction > AUTO_NOISE_BYTES and 2 * work <= AUTO_PAIR_BYTES and compute_bound:
      fit = max(fit, 2)
  else:
    fit = int(AUTO_DEVICE_FRACTION * _device_bytes()) // (direction + work)
  if fit >= num_units:
    return None
  return 1 << (max(int(fit), 1).bit_length() - 1)


# (num_units, unit_bytes, chunk, unit_flops) of the last "auto" resolution: a diagnostic
# for benchmarks and tests (benchmarks/chunk_grid.py), not part of any result.
last_auto: tuple | None = None


def resolve_chunk_size(chunk_size, num_units: int, size: int, dtype, unit_fn: Callable,
                       *unit_args, loss_only: tuple | None = None) -> int | None:
  """``chunk_size`` itself, or what ``"auto"`` means for ``unit_fn(*unit_args)``.

  ``loss_only``: ``(fn, args)``, the unit's work without drawing its
  direction; its flops (not the unit's, whose Threefry rounds XLA counts as
  flops too) tell whether the loss is compute-bound. Default: the unit.
  """
  global last_auto
  if chunk_size != "auto":
    return chunk_size
  cost = member_cost(unit_fn, *unit_args)
  unit_bytes, unit_flops = (None, None) if cost is None else cost
  if loss_only is not None and cost is not None:
    loss_cost = member_cost(loss_only[0], *loss_only[1])
    unit_flops = None if loss_cost is None else loss_cost.flops
  chunk = auto_chunk_size(num_units, size, dtype, unit_bytes, unit_flops)
  last_auto = (num_units, unit_bytes, chunk, unit_flops)
  return chunk


NOISES = ("normal", "table")
# noise="table": the table holds size + TABLE_SLACK(size) entries.
TABLE_MIN_SLACK = 1 << 16


def noise_table(key: Array, size: int, dtype) -> Array:
  """The per-call Gaussian table of ``noise="table"``: ``size + slack`` draws
  from a key derived from ``key`` (slack = max(size, 65,536))."""
  slack = max(size, TABLE_MIN_SLACK)
  return _normal.normal(jax.random.fold_in(key, 0x7AB1E), (size + slack,), dtype)


def table_direction(table: Array, key: Array, index: Array, size: int) -> Array:
  """Member ``index``'s direction under ``noise="table"``: the ``size``-slice
  of ``table`` at the offset ``randint(fold_in(key, index))`` (OpenAI-ES's
  shared noise table, Salimans et al. 2017, drawn afresh from the key)."""
  slack = table.shape[0] - size
  offset = jax.random.randint(jax.random.fold_in(key, index), (), 0, slack)
  return jax.lax.dynamic_slice(table, (offset,), (size,))


def gaussian_direction(key: Array, index: Array, size: int, dtype,
                       *, antithetic: bool) -> Array:
  """Member ``index``'s ``N(0, I)`` direction (pairs ``2u, 2u+1`` mirror ``z_u``)."""
  if antithetic:
    z = gaussian_direction(key, index // 2, size, dtype, antithetic=False)
    return jnp.where(index % 2 == 0, z, -z)
  return _normal.normal(jax.random.fold_in(key, index), (size,), dtype)


def weighted_direction_sum(direction: Callable[[Array], Array], weights: Array,
                           indices: Array, size: int, dtype,
                           chunk_size: int | None,
                           axis_name: str | None,
                           directions: Array | None = None) -> Array:
  """``sum_i weights[i] * direction(indices[i])``, summed over all devices.

  Directions are regenerated chunk by chunk and folded into one accumulator,
  so only ``chunk_size`` directions are alive at a time. ``directions``: the
  ``[n, D]`` directions when the caller already holds them all (one chunk),
  used instead of drawing them again.
  """
  n = indices.shape[0]
  chunk = n if chunk_size is None else min(chunk_size, n)
  if directions is None and chunk == n:
    directions = jax.vmap(direction)(indices)        # one chunk: all [n, D] at once
  if directions is not None:
    return allreduce(weights.astype(dtype) @ directions, axis_name)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  # Padded members get weight 0 and a valid index, so they add nothing.
  idx = jnp.pad(indices, (0, pad), mode="edge").reshape(num_chunks, chunk)
  w = jnp.pad(weights.astype(dtype), (0, pad)).reshape(num_chunks, chunk)

  def body(total, chunk_args):
    chunk_idx, chunk_w = chunk_args
    dirs = jax.vmap(direction)(chunk_idx)            # [chunk, D]
    return total + chunk_w @ dirs, None

  total, _ = jax.lax.scan(body, jnp.zeros((size,), dtype), (idx, w))
  return allreduce(total, axis_name)


def finite_mask(values: Array) -> Array:
  return jnp.isfinite(values)


def masked_standardize(values: Array, mask: Array) -> Array:
  """``(v - mean) / std`` over finite members; 0 where masked or std == 0.

  Members with a non-finite loss are dropped (weight 0) rather than poisoning
  the mean and standard deviation; all-equal losses give zero weights, not
  ``0 / 0``.
  """
  n = jnp.maximum(mask.sum(), 1)
  safe = jnp.where(mask, values, 0.0)
  mean = safe.sum() / n
  centred = jnp.where(mask, values - mean, 0.0)
  std = jnp.sqrt((centred**2).sum() / n)
  # Relative threshold: a std at float rounding level of the mean is "equal".
  tiny = jnp.finfo(values.dtype).eps * jnp.maximum(jnp.abs(mean), 1.0) * 4
  return jnp.where((std > tiny) & mask, centred / jnp.where(std > tiny, std, 1.0), 0.0)


def centered_ranks(values: Array, mask: Array) -> Array:
  """Ranks of finite members mapped linearly onto [-0.5, 0.5] (OpenAI-ES).

  Ties share their mean rank (so all-equal losses give zero weights); members
  with a non-finite loss get weight 0 and take no part in the ranking.
  O(P log P) via a sort, never a P x P comparison matrix.
  """
  v = jnp.where(mask, values, jnp.inf)
  ordered = jnp.sort(v)
  low = jnp.searchsorted(ordered, v, side="left")
  high = jnp.searchsorted(ordered, v, side="right") - 1
  rank = 0.5 * (low + high).astype(values.dtype)
  n = mask.sum()
  shaped = rank / jnp.maximum(n - 1, 1).astype(values.dtype) - 0.5
  return jnp.where(mask & (n > 1), shaped, 0.0)


def coordinate_values(fn: Callable[[Array], Array], size: int,
                      chunk_size: int | None, axis_name: str | None) -> Array:
  """``[fn(j) for j in range(size)]``, chunked and split across devices.

  Used by the basis-direction estimators (finite differences, forward mode),
  whose "population" is one member per coordinate. Coordinates are padded up
  to a multiple of the device count; padded entries are computed on a valid
  coordinate and dropped. ``chunk_size="auto"`` is resolved by measuring
  ``fn`` (see :func:`resolve_chunk_size`).
  """
  shards = num_shards(axis_name)
  per_shard = -(-size // shards)
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per_shard
  idx = start + jnp.arange(per_shard)
  member = lambda j: fn(jnp.minimum(j, size - 1))
  chunk_size = resolve_chunk_size(chunk_size, per_shard, size, jnp.float32, member, idx[0])
  vals = map_members(member, idx, chunk_size)
  return gather(vals, axis_name)[:size]


SHAPINGS = ("none", "standardize", "centered_rank")


def _chunks(indices: Array, chunk: int):
  """Indices as [chunks, chunk] (edge-padded) and the matching validity mask."""
  n = indices.shape[0]
  num = -(-n // chunk)
  pad = num * chunk - n
  idx = jnp.pad(indices, (0, pad), mode="edge").reshape(num, chunk)
  valid = (jnp.arange(num * chunk) < n).reshape(num, chunk)
  return idx, valid


class PopulationInfo(NamedTuple):
  """What a sampling estimator's population did (``return_info=True``).

  Attributes:
    members: the number of members evaluated (population, directions or
      coordinates), over all devices.
    nonfinite: int32 scalar, how many of them had a non-finite value and
      were left out; ``nonfinite == members`` means the estimate is NaN.
  """
  members: int
  nonfinite: Array


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
  from . import _tree  # local: keeps this module free of pytree concerns
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype
  sigma = jnp.asarray(sigma, dtype)
  signs = jnp.asarray([1.0, -1.0] if antithetic else [1.0], dtype)
  per_unit = signs.shape[0]

  if noise == "table":
    table = noise_table(key, size, dtype)
    draw = lambda u: table_direction(table, key, u, size)
  else:
    draw = lambda u: gaussian_direction(key, u, size, dtype, antithetic=False)

  def member_losses(z):
    return jnp.stack([loss_fn(unflatten(theta + s * sigma * z)).astype(dtype)
                      for s in ((1.0, -1.0) if antithetic else (1.0,))])

  unit_losses = lambda u: member_losses(draw(u))
  units = local_indices(population // per_unit, axis_name, per_unit=per_unit)
  n_local = units.shape[0]
  chunk = resolve_chunk_size(chunk_size, n_local, size, dtype, unit_losses, units[0],
                             loss_only=(member_losses, (jnp.zeros((size,), dtype),)))
  chunk = n_local if chunk is None else min(chunk, n_local)

  if shaping == "centered_rank":
    # One chunk: its directions are alive anyway, so they serve both passes
    # (no second draw, no extra memory); several: drawn again in the sum pass.
    stored = jax.vmap(draw)(units) if chunk >= n_local else None
    local = (jax.vmap(member_losses)(stored) if stored is not None
             else map_members(unit_losses, units, chunk))
    losses = gather(local, axis_name).reshape(-1)
    finite = finite_mask(losses)
    weights = centered_ranks(losses, finite) * noise_scale(finite.sum().astype(dtype))
    unit_weights = weights.reshape(-1, per_unit) @ signs
    local_weights = unit_weights[units] if axis_name is not None else unit_weights
    grad = weighted_direction_sum(draw, local_weights, units, size, dtype, chunk,
                                  axis_name, directions=stored)
    info = PopulationInfo(population, (~finite).sum().astype(jnp.int32))
    return unflatten(jnp.where(finite.any(), grad, jnp.nan)), info

  pair_mask = shaping == "none" and antithetic
  idx, valid = _chunks(units, chunk)

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
  losses = gather(local_losses, axis_name).reshape(-1)
  mask = gather(local_mask.astype(jnp.int32), axis_name).reshape(-1) > 0
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
  grad = allreduce(direction_sum * noise_scale(kept), axis_name)
  info = PopulationInfo(population, (~jnp.isfinite(losses)).sum().astype(jnp.int32))
  return unflatten(jnp.where(kept > 0, grad, jnp.nan)), info   # no finite member: NaN, not zero
