"""Particles over truncated unrolls: the state and engine behind the unrolled estimators.

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
Particle ``i``'s noise and problem come from keys derived from its global
index, never from how particles are chunked or split over devices
(``axis_name``), so a key gives the same result on 1 or N devices.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _checks, _normal, _population, _tree

ACCUMULATORS = ("store", "regenerate")


class UnrollState(NamedTuple):
  """Particles of an unrolled estimator (leading axis: this device's particles).

  Attributes:
    inner: every particle's inner state (``init_inner``'s pytree, stacked).
    window: [n] int32, the window each particle unrolls next.
    episode_key: [n, 2] uint32, the key of the particle's current inner
      problem; its data keys and (for PES / NRES) its noise derive from it.
    accumulator: PES with ``accumulator="store"``: [n / 2, D] float32, each
      pair's perturbation directions summed since its last reset (in units of
      sigma); ``()`` otherwise (regenerated from ``episode_key`` when needed).
    loss: [n] float32, each particle's loss on its last window (NaN before
      the first call); ``state.loss.mean()`` is a cheap training curve.
    num_windows: int32 scalar, the horizon in windows (-1: never reset).
  """
  inner: Any
  window: jax.Array
  episode_key: jax.Array
  accumulator: Any
  loss: jax.Array
  num_windows: jax.Array


def _raw_key(key: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def _data_key(episode_key, window):
  return jax.random.fold_in(jax.random.fold_in(episode_key, 0), window)


def _noise_base(episode_key):
  return jax.random.fold_in(episode_key, 1)


def _new_episode_key(key, group, episode_tag):
  """The key of a fresh inner problem for particle group ``group`` (a pair,
  or one particle), from the call key: the same on every device."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 0x5E7), episode_tag), group)


def _layout(estimator) -> tuple[int, bool]:
  """(particles per group, PES accumulator?) of an unrolled estimator."""
  from .noise_reuse_es import noise_reuse_es
  from .pes import pes
  from .truncated_backprop import truncated_backprop
  from .truncated_es import truncated_es
  layouts = {truncated_backprop: (1, False), truncated_es: (2, False), pes: (2, True),
             noise_reuse_es: (2, False)}
  names = {f.__name__: v for f, v in layouts.items()}
  if estimator in layouts:
    return layouts[estimator]
  if isinstance(estimator, str) and estimator in names:
    return names[estimator]
  raise ValueError(f"`estimator` must be one of the unrolled estimators {sorted(names)} "
                   f"(the function or its name), got {estimator!r}.")


def local_particles(num_particles: int, group: int, axis_name: str | None) -> jax.Array:
  shards = _population.num_shards(axis_name)
  if num_particles % (group * shards):
    what = "pairs of particles" if group == 2 else "particles"
    raise ValueError(f"`num_particles` ({num_particles}) must split into {what} evenly over "
                     f"the {shards} device(s) of axis {axis_name!r}.")
  per = num_particles // shards
  start = 0 if axis_name is None else jax.lax.axis_index(axis_name) * per
  return start + jnp.arange(per)


def init_state(estimator, init_inner: Callable[[jax.Array], Any], key: jax.Array, *,
               num_particles: int, num_windows: int | None = None, params: Any = None,
               unroll: Callable | None = None, stagger: bool = False,
               accumulator: str = "store", axis_name: str | None = None) -> UnrollState:
  """Starts the particles of an unrolled estimator.

  Args:
    estimator: the estimator the state is for (``estimators.pes``, ...,
      or its name): it fixes the layout (antithetic pairs, PES accumulator).
    init_inner: ``key -> inner_state``, a fresh inner problem.
    key: PRNG key; particle group g's first problem comes from it.
    num_particles: particles in total (over all devices); even for the
      antithetic estimators.
    num_windows: the horizon in windows, after which a particle is reset;
      ``None`` never resets (an infinite horizon, as in influence balancing).
    params: the meta-parameters (needed for PES's stored accumulator, whose
      shape is theirs, and for ``stagger``).
    unroll: the window function (needed for ``stagger``).
    stagger: advance particle group g by ``g * num_windows / groups`` windows
      with the unperturbed ``params`` first, so that the population covers
      every position of the horizon (PES paper, section 4) instead of all
      particles resetting together. The first episode's estimates then miss
      the perturbations of the skipped windows (a transient bias).
    accumulator: PES only: ``"store"`` keeps a [pairs, D] sum of each pair's
      perturbations; ``"regenerate"`` stores nothing and re-draws the
      window's noise from the keys (O(windows since reset) draws per step).
    axis_name: create only this device's particles (inside ``shard_map`` /
      ``pmap``; the key must be the same on every device).

  Returns:
    An :class:`UnrollState`.
  """
  group, has_accumulator = _layout(estimator)
  num_particles = _checks.integer("num_particles", num_particles, minimum=group)
  if num_windows is not None:
    num_windows = _checks.count("num_windows", num_windows)
  stagger = _checks.boolean("stagger", stagger)
  accumulator = _checks.choice("accumulator", accumulator, ACCUMULATORS)
  if has_accumulator and accumulator == "regenerate" and num_windows is None:
    raise ValueError("`accumulator='regenerate'` needs a finite `num_windows`: its cost grows "
                     "with the windows since the last reset.")
  key = _raw_key(key)
  _checks.prng_key("key", key)
  particles = local_particles(num_particles, group, axis_name)
  episode_keys = jax.vmap(lambda i: _new_episode_key(key, i // group, 0))(particles)
  inner = jax.vmap(init_inner)(jax.vmap(lambda k: jax.random.fold_in(k, 2))(episode_keys))
  window = jnp.zeros(particles.shape, jnp.int32)
  if stagger:
    if num_windows is None or params is None or unroll is None:
      raise ValueError("`stagger` needs `num_windows`, `params` and `unroll` to advance the "
                       "particles along the horizon.")
    groups = num_particles // group
    target = ((particles // group) * num_windows // groups).astype(jnp.int32)

    def advance(w, inner):
      def one(inner_i, k, t):
        _, moved = unroll(params, inner_i, _data_key(k, w), w)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(w < t, a, b), moved, inner_i)
      return jax.vmap(one)(inner, episode_keys, target)

    inner = jax.lax.fori_loop(0, jnp.max(target), advance, inner)
    window = target
  acc: Any = ()
  if has_accumulator and accumulator == "store":
    if params is None:
      raise ValueError("PES with accumulator='store' needs `params` (its shape) in init_state.")
    _checks.float_pytree("params", params)
    size = _tree.flatten(params)[0].shape[0]
    acc = jnp.zeros((particles.shape[0] // 2, size), jnp.float32)
  horizon = jnp.asarray(-1 if num_windows is None else num_windows, jnp.int32)
  return UnrollState(inner, window, episode_keys, acc,
                     jnp.full(particles.shape, jnp.nan, jnp.float32), horizon)


def reset_finished(state: UnrollState, init_inner: Callable | None, key, particles, group):
  """Particles at the end of their horizon start a new problem (window 0);
  ``key`` (this call's reset key) names the new problems. The work is skipped
  (``lax.cond``) when no particle is done, as on most calls."""
  done = (state.num_windows >= 0) & (state.window >= state.num_windows)
  if init_inner is None:
    return state, done

  def reset(state):
    fresh_keys = jax.vmap(lambda i: _new_episode_key(key, i // group, 1))(particles)
    fresh = jax.vmap(init_inner)(jax.vmap(lambda k: jax.random.fold_in(k, 2))(fresh_keys))
    pick = lambda new, old: jax.vmap(lambda d, a, b: jnp.where(d, a, b))(done, new, old)
    acc = state.accumulator
    if not isinstance(acc, tuple):
      acc = jnp.where(done[::2, None], 0.0, acc)
    return state._replace(inner=jax.tree_util.tree_map(pick, fresh, state.inner),
                          episode_key=pick(fresh_keys, state.episode_key),
                          window=jnp.where(done, 0, state.window), accumulator=acc)

  return jax.lax.cond(jnp.any(done), reset, lambda s: s, state), done


def check_state(state: Any, params: Any, group: int) -> None:
  if not isinstance(state, UnrollState):
    raise ValueError(f"`state` must be an UnrollState from estimators.init_state, got "
                     f"{type(state).__name__}.")
  if state.window.ndim != 1 or state.window.shape[0] % group:
    raise ValueError(f"`state` holds {state.window.shape} particles; this estimator needs "
                     f"antithetic pairs: create it with init_state(estimator, ...).")
  _checks.float_pytree("params", params)


def check_unroll(unroll: Callable, params, state: UnrollState) -> None:
  """``unroll`` returns ``(scalar loss, inner state of the same structure)``."""
  one = jax.tree_util.tree_map(lambda x: x[0], state.inner)
  out = jax.eval_shape(unroll, params, one, state.episode_key[0], state.window[0])
  if not (isinstance(out, (tuple, list)) and len(out) == 2):
    raise ValueError("`unroll` must return (loss, inner_state), got "
                     f"{jax.tree_util.tree_map(lambda o: (o.shape, o.dtype), out)}.")
  loss, inner = out
  if getattr(loss, "shape", None) != () or not jnp.issubdtype(loss.dtype, jnp.floating):
    raise ValueError(f"`unroll`'s loss must be a floating scalar, got {loss}.")
  if jax.tree_util.tree_structure(inner) != jax.tree_util.tree_structure(one):
    raise ValueError("`unroll` must return an inner state with the structure of the one it "
                     "was given.")


def antithetic_step(unroll: Callable, params, state: UnrollState, key, *, sigma,
                    noise: str, init_inner, chunk_size, axis_name):
  """One window of every antithetic pair and the gradient estimate

      g = 1/(2 sigma n) sum_u (L_u^+ - L_u^-) xi_u,   theta_u^{+-} = theta +- sigma z_u

  with ``xi = z`` (``noise="fresh"``: truncated ES; ``"episode"``: noise-reuse
  ES, ``z`` fixed for the episode) or ``xi`` = the sum of the pair's ``z``
  since its reset (``"accumulated"``: PES), over the ``n`` pairs with finite
  losses on all devices.
  """
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype
  sigma = jnp.asarray(sigma, dtype)
  reset_key, key = jax.random.split(_raw_key(key))
  particles = local_particles(state.window.shape[0] * _population.num_shards(axis_name), 2,
                              axis_name)
  state, _ = reset_finished(state, init_inner, reset_key, particles, 2)
  pair_index = particles[::2] // 2                             # global pair ids
  episode_key = state.episode_key[::2]
  window = state.window[::2]
  stored = not isinstance(state.accumulator, tuple)

  def z_at(ek, w):
    return _normal.normal(jax.random.fold_in(_noise_base(ek), w), (size,), dtype)

  def current_noise(u_local_args):
    pair, ek, w = u_local_args
    if noise == "fresh":
      return _normal.normal(jax.random.fold_in(key, pair), (size,), dtype)
    if noise == "episode":
      return _normal.normal(_noise_base(ek), (size,), dtype)
    return z_at(ek, w)                                        # PES: this window's increment

  def direction(pair, ek, w):
    """xi_u, what the loss difference multiplies (regenerated from keys)."""
    if noise != "accumulated":
      return current_noise((pair, ek, w))
    # PES without a stored accumulator: the increments of windows 0..w of the episode.
    return jax.lax.fori_loop(0, w + 1, lambda v, total: total + z_at(ek, v),
                             jnp.zeros((size,), dtype))

  inner_pairs = jax.tree_util.tree_map(lambda x: x.reshape(-1, 2, *x.shape[1:]), state.inner)
  acc_rows = state.accumulator if stored else jnp.zeros((pair_index.shape[0], 0), dtype)

  def pair_work(u):
    pair, ek, w = pair_index[u], episode_key[u], window[u]
    z = current_noise((pair, ek, w))
    inner_u = jax.tree_util.tree_map(lambda x: x[u], inner_pairs)
    data = _data_key(ek, w)
    outs = [unroll(unflatten(theta + s * sigma * z), jax.tree_util.tree_map(lambda x: x[i], inner_u),
                   data, w) for i, s in enumerate((1.0, -1.0))]
    losses = jnp.stack([jnp.asarray(o[0], jnp.float32) for o in outs])
    new_inner = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), outs[0][1], outs[1][1])
    return losses, new_inner

  units = jnp.arange(pair_index.shape[0])
  chunk = _population.resolve_chunk_size(chunk_size, units.shape[0], size, dtype, pair_work,
                                         units[0])
  losses, new_inner = _population.map_members(pair_work, units, chunk)   # [pairs, 2], [pairs, 2, ...]
  ok = jnp.all(jnp.isfinite(losses), axis=1)
  kept = _population.allreduce(ok.sum(), axis_name)
  coeff = jnp.where(ok, (losses[:, 0] - losses[:, 1]), 0.0).astype(dtype) / (
      2.0 * sigma * jnp.maximum(kept, 1).astype(dtype))
  if noise == "accumulated" and stored:
    increments = jax.vmap(z_at)(episode_key, window)
    new_acc = acc_rows + increments
    grad = _population.allreduce(coeff @ new_acc, axis_name)
    acc_out = new_acc
  else:
    grad = _population.weighted_direction_sum(
        lambda u: direction(pair_index[u], episode_key[u], window[u]), coeff, units,
        size, dtype, chunk, axis_name)
    acc_out = state.accumulator
  inner = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), new_inner)
  state = state._replace(inner=inner, window=state.window + 1, accumulator=acc_out,
                         loss=losses.reshape(-1))
  return unflatten(grad), state


def full_unroll(unroll: Callable, init_inner: Callable, key: jax.Array, *,
                num_windows: int) -> Callable[[Any], jax.Array]:
  """``params -> sum_w L_w``: one whole horizon of a fresh inner problem.

  The inner problem and the window data keys are those a particle whose
  episode key is ``key`` would see, so the first-order estimators
  (``backprop``, ``es``, ``forward_mode``...) can be compared with the
  unrolled ones on the same problem: memory of ``backprop`` through it grows
  with the horizon, the others' does not.

  Args:
    unroll: ``(params, inner_state, key, window) -> (loss, inner_state)``.
    init_inner: ``key -> inner_state``.
    key: the episode key (fixes the inner problem and its data keys).
    num_windows: the horizon in windows.
  """
  num_windows = _checks.count("num_windows", num_windows)
  key = _raw_key(key)

  def loss_fn(params):
    inner = init_inner(jax.random.fold_in(key, 2))

    def body(carry, w):
      inner, total = carry
      loss, inner = unroll(params, inner, _data_key(key, w), w)
      return (inner, total + loss), None

    (_, total), _ = jax.lax.scan(body, (inner, jnp.zeros((), jnp.float32)),
                                 jnp.arange(num_windows))
    return total
  return loss_fn
