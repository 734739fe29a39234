"""``chunk_size="auto"``: how many members to evaluate at a time.

One rule for every estimator that iterates over members (noise draws, JVP
tangents or coordinates), as a pure function of what XLA reports about one
member's work, returning a ``ChunkPlan``. The plan travels back to the
caller in ``PopulationInfo.chunk_plan`` (static, so ``jax.eval_shape`` shows
it without running anything).

On CPU a chunk is bounded twice: its directions should fit in about
``NOISE_BYTES`` of cache (generating and consuming noise in cache-sized chunks
made an es step at D = 1e6, P = 64 2x faster than drawing all 32 directions
at once), and its members' intermediate values (XLA's compiled temporaries of
one member, measured) in ``MEMBER_BYTES``. Members whose direction alone
exceeds half the noise budget run two at a time when two fit in
``PAIR_BYTES`` and their loss is compute-bound (at least ``PAIR_FLOPS`` flops
per parameter in XLA's cost analysis of one member): two members' matmuls then
run as one batched product that keeps both cores busy (benchmark 9, D = 1e6
MLP on 256 examples, ~512 flops per parameter: chunk 2 is 2x faster than
chunk 1), while an elementwise loss (~7 flops per parameter, benchmark 3) only
gains a second direction competing for cache (chunk 1 is 1.3x faster there).
The budgets are calibrated on benchmark 9's grid (conv4-16 ProtoNet: chunk 1
best, 9.4 MiB per member; MLPs D = 1e3..1e6) and benchmark 3. On accelerators
the whole population runs at once unless its temporaries would take more than
``DEVICE_FRACTION`` of device memory.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

NOISE_BYTES = 2 * 2**20
MEMBER_BYTES = 16 * 2**20
PAIR_BYTES = 256 * 2**20
PAIR_FLOPS = 64
DEVICE_FRACTION = 0.25
_DEFAULT_DEVICE_BYTES = 8 * 2**30     # when a backend reports no memory limit


class MemberCost(NamedTuple):
  """XLA's compiled view of one member's work: peak temporary bytes and
  flops (``None`` where the backend's cost analysis gives none)."""
  temp_bytes: int
  flops: float | None


class ChunkPlan(NamedTuple):
  """How a population is evaluated: ``chunk_size`` members at a time
  (``None``: all at once), and why.

  Attributes:
    num_units: units of work on this device (members, antithetic pairs,
      tangents or coordinates).
    chunk_size: units evaluated together (``None``: all of them).
    auto: whether ``chunk_size`` was resolved from ``"auto"``.
    unit_bytes: XLA's compiled temporaries of one unit (``None``: unknown or
      not measured).
    unit_flops: XLA's flops of one unit's loss (``None``: unknown or not
      measured).

  Examples:
    ``jax.eval_shape`` shows the plan an estimator will use, without running it:

    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> plan = jax.eval_shape(lambda w: estimators.es_wsr(
    ...     lambda v: jnp.sum(v ** 2), w, jax.random.PRNGKey(0), population=64,
    ...     chunk_size=8, return_info=True), jnp.ones(5))[1].chunk_plan
    >>> plan.num_units, plan.chunk_size, plan.auto
    (64, 8, False)
  """
  num_units: int
  chunk_size: int | None
  auto: bool = False
  unit_bytes: int | None = None
  unit_flops: float | None = None


def _abstract(x):
  return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))


class _Program:
  """A jaxpr that hashes and compares by its text: each trace builds a new
  Jaxpr object, and the same member program must hit the same cache entry."""

  def __init__(self, jaxpr):
    self.jaxpr, self.text = jaxpr, str(jaxpr)

  def __hash__(self):
    return hash(self.text)

  def __eq__(self, other):
    return isinstance(other, _Program) and self.text == other.text


@functools.lru_cache(maxsize=256)
def _compiled_cost(program: _Program, consts: tuple, args: tuple, backend: str) -> MemberCost:
  del backend   # part of the cache key only
  run = lambda c, a: jax.core.eval_jaxpr(program.jaxpr, c, *a)
  exe = jax.jit(run).lower(list(consts), list(args)).compile()
  return MemberCost(int(exe.memory_analysis().temp_size_in_bytes), _flops(exe))


def member_cost(fn: Callable, *args) -> MemberCost | None:
  """XLA's compiled temporary bytes and flops of ``fn(*args)``, one member's
  work.

  ``fn`` may close over values of an enclosing trace (an episode sampled
  inside the caller's ``jit``): its jaxpr's constants become abstract
  arguments, so nothing is evaluated. Compiled once per program and shapes;
  ``None`` if the program cannot be compiled on its own (e.g. it uses a
  collective over an axis bound outside it).
  """
  try:
    closed = jax.make_jaxpr(fn)(*args)
    consts = tuple(_abstract(c) for c in closed.consts)
    flat_args = tuple(_abstract(a) for a in jax.tree_util.tree_leaves(args))
    return _compiled_cost(_Program(closed.jaxpr), consts, flat_args, jax.default_backend())
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


def plan(num_units: int, size: int, dtype, unit_bytes: int | None = None,
         unit_flops: float | None = None, *, backend: str | None = None) -> ChunkPlan:
  """The plan ``chunk_size="auto"`` resolves to for ``num_units`` members of
  ``size``-element directions whose own work needs ``unit_bytes`` temporaries
  and ``unit_flops`` flops (unknown: ``None``, taken as compute-bound): all at
  once (``chunk_size=None``) when everything fits, else the largest power of
  two that fits (at least 1). See the module docstring for the budgets."""
  direction = size * jnp.dtype(dtype).itemsize
  work = max(unit_bytes or 0, 1)
  if (backend or jax.default_backend()) == "cpu":
    fit = min(NOISE_BYTES // direction, MEMBER_BYTES // work)
    compute_bound = unit_flops is None or unit_flops >= PAIR_FLOPS * size
    if 2 * direction > NOISE_BYTES and 2 * work <= PAIR_BYTES and compute_bound:
      fit = max(fit, 2)
  else:
    fit = int(DEVICE_FRACTION * _device_bytes()) // (direction + work)
  chunk = None if fit >= num_units else 1 << (max(int(fit), 1).bit_length() - 1)
  return ChunkPlan(num_units, chunk, True, unit_bytes, unit_flops)


def resolve(chunk_size, num_units: int, size: int, dtype, unit_fn: Callable, *unit_args,
            loss_only: tuple | None = None) -> ChunkPlan:
  """The plan for ``chunk_size`` itself, or what ``"auto"`` means for
  ``unit_fn(*unit_args)``.

  ``loss_only``: ``(fn, args)``, the unit's work without drawing its
  direction; its flops (not the unit's, whose Threefry rounds XLA counts as
  flops too) tell whether the loss is compute-bound. Default: the unit.
  """
  if chunk_size != "auto":
    return ChunkPlan(num_units, chunk_size)
  cost = member_cost(unit_fn, *unit_args)
  unit_bytes, unit_flops = (None, None) if cost is None else cost
  if loss_only is not None and cost is not None:
    loss_cost = member_cost(loss_only[0], *loss_only[1])
    unit_flops = None if loss_cost is None else loss_cost.flops
  return plan(num_units, size, dtype, unit_bytes, unit_flops)
