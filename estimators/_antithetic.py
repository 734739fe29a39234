"""One window of antithetic pairs: the engine of truncated ES, PES and noise-reuse ES.

Every pair u unrolls the window from its inner state(s) at ``theta +- sigma z_u``
and the estimate is

    g = 1/(2 sigma n) sum_u (L_u^+ - L_u^-) xi_u

over the n pairs whose two losses are finite (on all devices). The estimators
differ only in ``z_u`` (what perturbs this window), ``xi_u`` (what the loss
difference is credited to) and where a pair's members start:

* truncated ES: fresh ``z_u`` each window, ``xi_u = z_u``, both members from
  the pair's one shared state (PES paper, Algorithm 1);
* noise-reuse ES: one ``z_u`` per episode, ``xi_u = z_u``, each member from
  its own state;
* PES: fresh ``z_u`` each window, ``xi_u`` the sum of the pair's ``z`` since
  its perturbations began, each member from its own state.

If no pair is finite the estimate is NaN (never a silent zero).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .. import _checks
from . import (_auto_chunk, _chunking, _noise, _particles, _sharding, _tree, _unroll,
               _unroll_checks)

CARRIES = ("unperturbed", "positive")


class Window(NamedTuple):
  """What a pair's noise may depend on in this window (this device's pairs)."""
  key: jax.Array              # this call's key
  pair_ids: jax.Array         # [pairs] global pair indices
  episode_key: jax.Array      # [pairs, 2]
  window: jax.Array           # [pairs] the window each pair unrolls now
  perturbed_from: jax.Array   # [pairs] the first perturbed window of the episode
  size: int
  dtype: Any


Direction = Callable[[Window, jax.Array], jax.Array]


def fresh_noise(w: Window, u: jax.Array) -> jax.Array:
  """Truncated ES: a new ``z_u`` every window, from this call's key."""
  return _noise.normal(jax.random.fold_in(w.key, w.pair_ids[u]), (w.size,), w.dtype)


def episode_noise(w: Window, u: jax.Array) -> jax.Array:
  """Noise-reuse ES: one ``z_u`` for the whole episode, from its key."""
  return _noise.normal(_particles.noise_base(w.episode_key[u]), (w.size,), w.dtype)


def _increment(episode_key, window, size, dtype):
  return _noise.normal(jax.random.fold_in(_particles.noise_base(episode_key), window), (size,),
                       dtype)


def window_increment(w: Window, u: jax.Array) -> jax.Array:
  """PES: this window's ``z_uw``, keyed by the episode and the window."""
  return _increment(w.episode_key[u], w.window[u], w.size, w.dtype)


def accumulated_increments(w: Window, u: jax.Array) -> jax.Array:
  """PES's credit ``xi_u``, regenerated from keys: the increments of the
  windows perturbed so far in this episode (``accumulator="regenerate"``)."""
  return jax.lax.fori_loop(w.perturbed_from[u], w.window[u] + 1,
                           lambda v, total: total + _increment(w.episode_key[u], v, w.size,
                                                               w.dtype),
                           jnp.zeros((w.size,), w.dtype))


def estimate(name: str, unroll: Callable, params, state, key, *, direction: Direction,
             credit: Direction | None = None, sigma, init_inner, chunk_size, axis_name,
             carry: str = "unperturbed"):
  """The public estimators' shared body: every trace-time check, then one
  window. ``direction`` is what perturbs a pair this window, ``credit`` what
  its loss difference is credited to (default: ``direction``)."""
  key = _unroll_checks.check_call(name, unroll, params, state, key, init_inner)
  _checks.positive("sigma", sigma)
  carry = _checks.choice("carry", carry, CARRIES)
  chunk_size = _checks.chunk_size(chunk_size, allow_auto=True)
  return window_step(unroll, params, state, key, direction=direction,
                     credit=credit or direction, sigma=sigma, init_inner=init_inner,
                     chunk_size=chunk_size, axis_name=axis_name, carry=carry)


def window_step(unroll: Callable, params, state: _unroll.UnrollState, key, *,
                direction: Direction, credit: Direction, sigma, init_inner, chunk_size,
                axis_name, carry: str = "unperturbed"):
  """``(grads, state)`` after one window of every pair (see the module doc)."""
  layout = _particles.LAYOUTS[state.estimator]
  theta, unflatten = _tree.flatten(params)
  size, dtype = theta.shape[0], theta.dtype
  sigma = jnp.asarray(sigma, dtype)
  reset_key, key = jax.random.split(key)
  num_particles = _unroll.num_particles_of(state, axis_name)
  state = _unroll.reset_finished(state, init_inner, reset_key, axis_name, num_particles)
  pair_ids = _particles.local_rows(num_particles, layout, axis_name)
  rows = 1 if layout.shared_inner else 2            # state rows per pair
  pair_ids = pair_ids[::rows]
  episode_key, window = state.episode_key[::rows], state.window[::rows]
  ctx = Window(key, pair_ids, episode_key, window, state.perturbed_from[::rows], size, dtype)
  current_noise = lambda u: direction(ctx, u)
  credited = lambda u: credit(ctx, u)

  inner_rows = jax.tree_util.tree_map(lambda x: x.reshape(-1, rows, *x.shape[1:]), state.inner)

  def pair_work(u):
    z = current_noise(u)
    start = jax.tree_util.tree_map(lambda x: x[u], inner_rows)
    member = lambda i: jax.tree_util.tree_map(lambda x: x[min(i, rows - 1)], start)
    data, w = _particles.data_key(episode_key[u], window[u]), window[u]
    outs = [unroll(unflatten(theta + s * sigma * z), member(i), data, w)
            for i, s in enumerate((1.0, -1.0))]
    losses = jnp.stack([jnp.asarray(o[0], jnp.float32) for o in outs])
    if not layout.shared_inner:
      new = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), outs[0][1], outs[1][1])
    elif carry == "unperturbed":     # Algorithm 1: s <- unroll(s, theta, K)
      new = jax.tree_util.tree_map(lambda x: x[None], unroll(params, member(0), data, w)[1])
    else:                            # learned_optimization's TruncatedES: the + member's state
      new = jax.tree_util.tree_map(lambda x: x[None], outs[0][1])
    return losses, new

  units = jnp.arange(pair_ids.shape[0])
  chunk = _auto_chunk.resolve(chunk_size, units.shape[0], size, dtype, pair_work,
                              units[0]).chunk_size
  losses, new_inner = _chunking.map_members(pair_work, units, chunk)   # [pairs, 2]
  ok = jnp.all(jnp.isfinite(losses), axis=1)
  kept = _sharding.allreduce(ok.sum(), axis_name)
  coeff = jnp.where(ok, losses[:, 0] - losses[:, 1], 0.0).astype(dtype) / (
      2.0 * sigma * jnp.maximum(kept, 1).astype(dtype))
  accumulator = state.accumulator
  if accumulator is not None:                        # PES, stored: O(1) draws per window
    accumulator = accumulator + jax.vmap(lambda u: window_increment(ctx, u))(units)
    grad = _sharding.allreduce(coeff @ accumulator, axis_name)
  else:
    grad = _chunking.weighted_direction_sum(credited, coeff, units, size, dtype, chunk,
                                            axis_name)
  grad = jnp.where(kept > 0, grad, jnp.nan)          # no finite pair: NaN, not zero
  inner = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), new_inner)
  state = state._replace(inner=inner, window=state.window + 1, accumulator=accumulator,
                         loss=jnp.where(jnp.isfinite(losses), losses, jnp.nan).reshape(-1))
  return unflatten(grad), state
