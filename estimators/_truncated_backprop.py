"""Truncated backpropagation through time (TBPTT) over unrolled windows.

Williams & Peng (1990), "An Efficient Gradient-Based Algorithm for On-Line
Training of Recurrent Network Trajectories"; its short-horizon bias in
meta-learning: Wu, Ren, Liao & Grosse (2018), arXiv:1803.02021; as the
baseline of Vicol, Metz & Sohl-Dickstein (2021), PES, arXiv:2112.13835.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import (_auto_chunk, _chunking, _particles, _sharding, _tree, _unroll,
               _unroll_checks)


def truncated_backprop(unroll: Callable, params: Any, state: _unroll.UnrollState,
                       key: jax.Array, *, init_inner: Callable | None = None,
                       chunk_size: int | str | None = "auto",
                       axis_name: str | None = None) -> tuple[Any, _unroll.UnrollState]:
  """``g = 1/n sum_i d L_w(params; s_i) / d params`` over one window per particle.

  Each particle's inner state ``s_i`` at the window's start is a constant:
  the gradient ignores how ``params`` shaped it in earlier windows. Memory is
  one window's tape per particle (flat in the horizon), but the estimate is
  **biased**: in influence balancing with one step per window it has the wrong
  sign near the optimum (it pushes theta away from it), and for learning-rate
  schedules it prefers rates that look good over K steps only.

  Args:
    unroll: ``(params, inner_state, key, window) -> (loss, inner_state)``.
    params: the meta-parameters (pytree of floats).
    state: from ``estimators.init_state(truncated_backprop, ...)``.
    key: PRNG key of this call (names the problems of reset particles).
    init_inner: ``key -> inner_state``, to reset particles at the end of a
      finite horizon (required when the state's horizon is finite).
    chunk_size: particles differentiated at once (``"auto"``: measured).
    axis_name: inside ``shard_map``/``pmap``, the axis the particles are split
      over (the key must be the same on every device).

  Returns:
    ``(grads, state)``: grads shaped like ``params`` (NaN if no particle's
    loss and gradient were finite), the particles one window on.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> unroll = lambda p, s, k, w: (jnp.sum((s - p["target"]) ** 2), 0.5 * s + 0.5 * p["target"])
    >>> init = lambda k: jnp.zeros(2)
    >>> params = {"target": jnp.ones(2)}
    >>> state = estimators.init_state(estimators.truncated_backprop, init, jax.random.PRNGKey(0),
    ...                               num_particles=2, num_windows=4, params=params)
    >>> g, state = estimators.truncated_backprop(unroll, params, state, jax.random.PRNGKey(1),
    ...                                          init_inner=init)
    >>> g["target"].shape, state.window.tolist()
    ((2,), [1, 1])

  References:
    Williams & Peng 1990, "An Efficient Gradient-Based Algorithm for On-Line
    Training of Recurrent Network Trajectories" (Neural Computation 2(4));
    Wu, Ren, Liao & Grosse 2018, "Understanding Short-Horizon Bias in
    Stochastic Meta-Optimization", arXiv:1803.02021.
  """
  key = _unroll_checks.check_call("truncated_backprop", unroll, params, state, key, init_inner)
  chunk_size = _checks.chunk_size(chunk_size, allow_auto=True)
  n_local = state.window.shape[0]
  state = _unroll.reset_finished(state, init_inner, key, axis_name,
                                 _unroll.num_particles_of(state, axis_name))
  theta, unflatten = _tree.flatten(params)

  def particle(i):
    inner = jax.tree_util.tree_map(lambda x: x[i], state.inner)
    data = _particles.data_key(state.episode_key[i], state.window[i])
    window_loss = lambda flat: unroll(unflatten(flat), inner, data, state.window[i])
    (loss, new_inner), grad = jax.value_and_grad(window_loss, has_aux=True)(theta)
    ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(grad))
    loss = jnp.where(ok, jnp.asarray(loss, jnp.float32), jnp.nan)
    return (loss, new_inner, ok), jnp.where(ok, grad, 0.0)

  units = jnp.arange(n_local)
  chunk = _auto_chunk.resolve(chunk_size, n_local, theta.shape[0], theta.dtype,
                              particle, units[0]).chunk_size
  (losses, inner, ok), total = _chunking.map_and_sum(particle, units, chunk)
  kept = _sharding.allreduce(ok.sum(), axis_name)
  grad = _sharding.allreduce(total, axis_name) / jnp.maximum(kept, 1).astype(total.dtype)
  grad = jnp.where(kept > 0, grad, jnp.nan)          # no finite particle: NaN, not zero
  state = state._replace(inner=inner, window=state.window + 1, loss=losses)
  return unflatten(grad), state
