"""Particles over truncated unrolls: the state behind the unrolled estimators.

The user writes one truncation window of an unrolled computation (K inner
steps of training, a slice of an RNN rollout...) as a pure function

    unroll(params, inner_state, key, window) -> (loss, inner_state)

and a function that starts a new inner problem, ``init_inner(key) ->
inner_state``. A *particle* is one inner problem being unrolled window after
window (``window`` counts them from 0); after ``num_windows`` windows (the
horizon) it is reset to a new problem. Estimators take one window per call:

    estimator(unroll, params, state, key, **hyper) -> (grads, state)

The objective whose gradient they estimate is the expected sum of window
losses over a horizon, ``E[sum_w L_w(params)]``.

Antithetic estimators (truncated ES, PES, noise-reuse ES) pair particles
``2u, 2u+1``: both members unroll the same inner problem with the same data
keys (common random numbers) and mirrored perturbations ``+-sigma z``.
PES and noise-reuse ES keep one inner state per member (each member's state
is the one its own perturbation shaped, which is what makes them unbiased);
truncated ES keeps one per pair, from which both members start every window
(PES paper, Algorithm 1). Particle ``i``'s noise and problem come from keys
derived from its global index, never from how particles are chunked or split
over devices (``axis_name``), so a key gives the same result on 1 or N devices.

The state records, as static (trace-time) fields, which estimator made it,
its horizon and the signature of the params it was made for, so a state
handed to another estimator, a finite horizon without ``init_inner`` or params
of another shape are refused when the call is traced -- under ``jit`` too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .. import _checks
from . import _horizon, _sharding, _tree
from ._particles import (LAYOUTS, Layout, data_key, local_rows, new_episode_key, noise_base,
                         raw_key, signature)

ACCUMULATORS = ("store", "regenerate")


@dataclasses.dataclass(frozen=True)
class UnrollState:
  """Particles of an unrolled estimator (leading axis: this device's rows).

  A row is one particle, or for truncated ES one antithetic pair (its
  members share the row's inner state).

  Attributes:
    inner: every row's inner state (``init_inner``'s pytree, stacked).
    window: [rows] int32, the window each row unrolls next.
    episode_key: [rows, 2] uint32, the key of the row's current inner
      problem; its data keys and (for PES / NRES) its noise derive from it.
    perturbed_from: [rows] int32, the first window of the current episode
      unrolled with perturbed params (> 0 only after ``stagger``); PES's
      regenerated accumulator sums the noise from there.
    accumulator: PES with ``accumulator="store"``: [pairs, D] float32, each
      pair's perturbation directions summed since its last reset (in units
      of sigma); ``None`` otherwise.
    loss: [particles] float32, each particle's loss on its last window
      (NaN before the first call, and for a member whose loss was not
      finite); ``jnp.nanmean(state.loss)`` is a cheap training curve.
    length: [rows] int32, the length in windows of each row's current
      episode (drawn from its episode key by the horizon schedule); ``None``
      with an infinite horizon.
    estimator: static, the name of the estimator the state is for.
    horizon: static, the horizon schedule (``FixedHorizon``,
      ``RandomHorizon``; ``None``: never reset).
    params_signature: static, the tree structure, shapes and dtypes of the
      params given to ``init_state`` (``None`` if none were given).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> state = estimators.init_state(estimators.pes, lambda key: {"x": jnp.zeros(3)},
    ...                               jax.random.PRNGKey(0), num_particles=4, num_windows=10,
    ...                               params={"lr": jnp.array(0.1)})
    >>> state.inner["x"].shape, state.window.tolist()           # one row per particle
    ((4, 3), [0, 0, 0, 0])
    >>> state.accumulator.shape                                  # [pairs, D]
    (2, 1)
    >>> state.estimator, state.horizon
    ('pes', FixedHorizon(num_windows=10))
  """
  inner: Any
  window: jax.Array
  episode_key: jax.Array
  perturbed_from: jax.Array
  accumulator: jax.Array | None
  loss: jax.Array
  length: jax.Array | None
  estimator: str = dataclasses.field(metadata=dict(static=True))
  horizon: _horizon.Horizon | None = dataclasses.field(metadata=dict(static=True))
  params_signature: Any = dataclasses.field(metadata=dict(static=True))

  def _replace(self, **changes) -> "UnrollState":
    return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(UnrollState)


def _name_of(estimator) -> str:
  """The unrolled estimator's name: the function, a ``functools.partial`` of
  it, or the name itself."""
  fn = getattr(estimator, "func", estimator)
  name = estimator if isinstance(estimator, str) else getattr(fn, "__name__", None)
  if name not in LAYOUTS or not (isinstance(estimator, str)
                                 or getattr(fn, "__module__", "").startswith("metagrad.")):
    raise ValueError(f"`estimator` must be one of the unrolled estimators {sorted(LAYOUTS)} "
                     f"(the function, a functools.partial of it, or its name), got "
                     f"{estimator!r}.")
  return name


def init_state(estimator, init_inner: Callable[[jax.Array], Any], key: jax.Array, *,
               num_particles: int, num_windows: Any = None, params: Any = None,
               unroll: Callable | None = None, stagger: bool = False,
               accumulator: str = "store", axis_name: str | None = None) -> UnrollState:
  """Starts the particles of an unrolled estimator.

  Args:
    estimator: the estimator the state is for (``estimators.pes``, a
      ``functools.partial`` of it, or its name): it fixes the layout
      (antithetic pairs, shared or per-member inner states, PES
      accumulator), and only that estimator accepts the state.
    init_inner: ``key -> inner_state``, a fresh inner problem.
    key: PRNG key; particle group g's first problem comes from it.
    num_particles: particles in total (over all devices); even for the
      antithetic estimators (a pair is two unrolls per window).
    num_windows: the horizon, after which a particle is reset (the
      estimator then needs ``init_inner``): an int (every episode that many
      windows), ``estimators.RandomHorizon(min_windows, max_windows)`` (each
      episode's length drawn from its key) or ``estimators.FixedHorizon``;
      ``None`` never resets (an infinite horizon, as in influence balancing).
    params: the meta-parameters. Recommended always: the estimators then
      refuse params of another structure, shape or dtype. Required for
      PES's stored accumulator (its width is theirs) and for ``stagger``.
    unroll: the window function (needed for ``stagger``).
    stagger: advance particle group g by ``g * length / groups`` windows
      with the unperturbed ``params`` first, so that the population covers
      every position of the horizon (PES paper, section 4) instead of all
      particles resetting together. Perturbations start at the group's
      first window (``perturbed_from``), for both PES accumulators.
    accumulator: PES only: ``"store"`` keeps a [pairs, D] sum of each pair's
      perturbations; ``"regenerate"`` stores nothing and re-draws the noise
      of the windows since ``perturbed_from`` from the keys (O(windows since
      reset) draws per step). Both give the same estimate for the same keys.
    axis_name: create only this device's particles (inside ``shard_map`` /
      ``pmap``; the key must be the same on every device).

  Returns:
    An ``UnrollState``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> state = estimators.init_state(estimators.pes, lambda k: jnp.zeros(3), jax.random.PRNGKey(0),
    ...                               num_particles=4, num_windows=10, params={"w": jnp.ones(2)})
    >>> state.inner.shape, state.window.tolist(), state.accumulator.shape
    ((4, 3), [0, 0, 0, 0], (2, 2))

  References:
    Vicol, Metz & Sohl-Dickstein 2021, "Unbiased Gradient Estimation in
    Unrolled Computation Graphs with Persistent Evolution Strategies",
    arXiv:2112.13835 (particles, staggering).
  """
  name = _name_of(estimator)
  layout = LAYOUTS[name]
  num_particles = _checks.integer("num_particles", num_particles, minimum=layout.group)
  horizon = _horizon.as_horizon(num_windows)
  stagger = _checks.boolean("stagger", stagger)
  accumulator = _checks.choice("accumulator", accumulator, ACCUMULATORS)
  if layout.accumulator and accumulator == "regenerate" and horizon is None:
    raise ValueError("`accumulator='regenerate'` needs a finite `num_windows`: its cost grows "
                     "with the windows since the last reset.")
  _check_init_inner(init_inner)
  key = raw_key("key", key)
  if params is not None:
    _checks.float_pytree("params", params)
  group_ids = local_rows(num_particles, layout, axis_name)
  episode_keys = jax.vmap(lambda g: new_episode_key(key, g, 0))(group_ids)
  inner = jax.vmap(init_inner)(jax.vmap(lambda k: jax.random.fold_in(k, 2))(episode_keys))
  window = jnp.zeros(group_ids.shape, jnp.int32)
  length = None if horizon is None else horizon.lengths(episode_keys)
  if stagger:
    if horizon is None or params is None or unroll is None:
      raise ValueError("`stagger` needs `num_windows`, `params` and `unroll` to advance the "
                       "particles along the horizon.")
    num_groups = num_particles // layout.group
    target = (group_ids * length // num_groups).astype(jnp.int32)

    def advance(w, inner):
      def one(inner_i, k, t):
        _, moved = unroll(params, inner_i, data_key(k, w), w)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(w < t, a, b), moved, inner_i)
      return jax.vmap(one)(inner, episode_keys, target)

    inner = jax.lax.fori_loop(0, jnp.max(target), advance, inner)
    window = target
  acc = None
  if layout.accumulator and accumulator == "store":
    if params is None:
      raise ValueError("PES with accumulator='store' needs `params` (its shape) in init_state.")
    size = _tree.flatten(params)[0].shape[0]
    acc = jnp.zeros((group_ids.shape[0] // 2, size), jnp.float32)
  local_particles = group_ids.shape[0] * (2 if layout.shared_inner else 1)
  return UnrollState(inner=inner, window=window, episode_key=episode_keys,
                     perturbed_from=window, accumulator=acc,
                     loss=jnp.full((local_particles,), jnp.nan, jnp.float32), length=length,
                     estimator=name, horizon=horizon,
                     params_signature=None if params is None else signature(params))


def _check_init_inner(init_inner) -> None:
  if not callable(init_inner):
    raise ValueError(f"`init_inner` must be a function key -> inner_state, got {init_inner!r}.")


def reset_finished(state: UnrollState, init_inner: Callable | None, key,
                   axis_name: str | None, num_particles: int) -> UnrollState:
  """Rows at the end of their horizon start a new problem (window 0);
  ``key`` (this call's reset key) names the new problems. The work is skipped
  (``lax.cond``) when no row is done, as on most calls."""
  if state.horizon is None:
    return state
  layout = LAYOUTS[state.estimator]
  groups = local_rows(num_particles, layout, axis_name)
  done = state.window >= state.length

  def reset(state):
    fresh_keys = jax.vmap(lambda g: new_episode_key(key, g, 1))(groups)
    fresh = jax.vmap(init_inner)(jax.vmap(lambda k: jax.random.fold_in(k, 2))(fresh_keys))
    pick = lambda new, old: jax.vmap(lambda d, a, b: jnp.where(d, a, b))(done, new, old)
    acc = state.accumulator
    if acc is not None:
      acc = jnp.where(done[::2, None], 0.0, acc)
    return state._replace(inner=jax.tree_util.tree_map(pick, fresh, state.inner),
                          episode_key=pick(fresh_keys, state.episode_key),
                          window=jnp.where(done, 0, state.window),
                          length=jnp.where(done, state.horizon.lengths(fresh_keys), state.length),
                          perturbed_from=jnp.where(done, 0, state.perturbed_from),
                          accumulator=acc)

  return jax.lax.cond(jnp.any(done), reset, lambda s: s, state)


def num_particles_of(state: UnrollState, axis_name: str | None) -> int:
  """Particles over all devices (static)."""
  return state.loss.shape[0] * _sharding.num_shards(axis_name)


