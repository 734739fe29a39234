"""The Hessian's extreme eigenvalues by Lanczos (estimators.curvature)."""

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import FLOAT_DTYPES, pytrees, smooth_loss

extremes = estimators.hessian_extreme_eigenvalues


def _split(vector):
  """A flat vector as a two-leaf pytree (the function must work on pytrees)."""
  half = vector.size // 2
  return {"a": vector[:half].reshape(-1, 1), "b": vector[half:]}


def _quadratic(matrix):
  matrix = jnp.asarray(matrix, jnp.float32)
  flat = lambda p: jnp.concatenate([p["a"].ravel(), p["b"]])
  return lambda p: 0.5 * flat(p) @ matrix @ flat(p)


def _spectrum(eigenvalues, seed):
  """A symmetric matrix with the given eigenvalues in a random orthogonal basis."""
  size = len(eigenvalues)
  basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(size, size)))
  return basis @ np.diag(eigenvalues) @ basis.T


@pytest.mark.parametrize("size,steps", [(40, 80), (300, 60)])
def test_matches_a_dense_eigendecomposition_on_an_indefinite_spectrum(size, steps):
  # Like the iMAML support Hessians: a few negative eigenvalues, a long
  # positive tail, separated extremes. 60 steps on D = 300 must find both ends.
  rng = np.random.default_rng(size)
  eigenvalues = np.concatenate([[-2.2, -1.4], rng.uniform(-0.3, 9.0, size - 3), [12.0]])
  loss = _quadratic(_spectrum(eigenvalues, size))
  ends = extremes(loss, _split(jnp.zeros(size)), jax.random.PRNGKey(0), num_iterations=steps)
  np.testing.assert_allclose([ends.lowest, ends.highest], [-2.2, 12.0], atol=1e-3)


def test_a_non_quadratic_loss_matches_jax_hessian():
  # An MLP's squared loss at a non-stationary point: the Hessian depends on
  # where it is taken, so this checks that the Hessian-vector products are
  # taken at `params`. With num_iterations >= D, Lanczos is exact.
  rng = np.random.default_rng(3)
  x, y = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32), jnp.asarray(rng.normal(size=16))
  params = {"w1": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=5), jnp.float32)}
  loss = lambda p: jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda v: loss(unravel(v)))(flat), np.float64))
  assert dense[0] < 0 < dense[-1]           # indefinite: both ends are informative
  ends = extremes(loss, params, jax.random.PRNGKey(1), num_iterations=40)
  np.testing.assert_allclose([ends.lowest, ends.highest], [dense[0], dense[-1]],
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_ritz_values_lie_inside_the_spectrum(steps):
  # Cauchy interlacing: the Ritz values of any orthonormal basis lie in
  # [lambda_min, lambda_max], so few iterations under-estimate |extremes| and
  # never overshoot -- what makes the lowest value a safe lower bound on how
  # indefinite the Hessian is *at least*.
  eigenvalues = np.linspace(-3.0, 7.0, 200)
  loss = _quadratic(_spectrum(eigenvalues, 7))
  run = jax.jit(jax.vmap(lambda k, n=steps: extremes(loss, _split(jnp.zeros(200)), k,
                                                       num_iterations=n)))
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  ends = run(keys)
  assert np.all(-3.0 - 1e-4 <= ends.lowest) and np.all(ends.highest <= 7.0 + 1e-4), ends
  assert np.all(ends.lowest <= ends.highest)
  if steps == 8:      # ...and they move outwards with more iterations
    few = jax.jit(jax.vmap(lambda k: extremes(loss, _split(jnp.zeros(200)), k,
                                              num_iterations=3)))(keys)
    assert np.all(ends.lowest < few.lowest) and np.all(ends.highest > few.highest)


def test_an_invariant_krylov_space_restarts_and_stays_exact():
  # Three distinct eigenvalues: the Krylov space is invariant after 3 steps
  # (beta_3 = 0); the remaining iterations restart orthogonally instead of
  # dividing by zero, and the extremes stay exact.
  diagonal = jnp.repeat(jnp.asarray([-2.0, 1.0, 5.0]), 20)
  loss = lambda x: 0.5 * jnp.sum(diagonal * x ** 2)
  for steps in (3, 10, 80):
    ends = extremes(loss, jnp.zeros(60), jax.random.PRNGKey(2), num_iterations=steps)
    np.testing.assert_allclose([ends.lowest, ends.highest], [-2.0, 5.0], atol=1e-5)
  # A zero Hessian breaks down at once.
  ends = extremes(lambda x: jnp.sum(3.0 * x), jnp.ones(5), jax.random.PRNGKey(0))
  np.testing.assert_array_equal([ends.lowest, ends.highest], [0.0, 0.0])


@pytest.mark.parametrize("size", [1, 2, 7])
def test_fewer_parameters_than_iterations_is_exact(size):
  eigenvalues = np.linspace(-1.0, 4.0, size) if size > 1 else np.array([-1.0])
  loss = lambda x: 0.5 * x @ jnp.asarray(_spectrum(eigenvalues, size), jnp.float32) @ x
  ends = extremes(loss, jnp.zeros(size), jax.random.PRNGKey(0))
  np.testing.assert_allclose([ends.lowest, ends.highest], [eigenvalues[0], eigenvalues[-1]],
                             atol=1e-5)


def test_same_key_same_result_and_jit_vmap_agree():
  loss = _quadratic(_spectrum(np.linspace(-1.0, 3.0, 50), 11))
  params = _split(jnp.zeros(50))
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  run = jax.jit(lambda k: extremes(loss, params, k, num_iterations=6))
  chex.assert_trees_all_equal(run(keys[0]), run(keys[0]))
  chex.assert_trees_all_equal(extremes(loss, params, keys[0], num_iterations=6),
                              extremes(loss, params, keys[0], num_iterations=6))
  chex.assert_trees_all_close(run(keys[0]), extremes(loss, params, keys[0], num_iterations=6),
                              rtol=1e-5, atol=1e-6)     # jit fuses differently: ulps
  batched = jax.jit(jax.vmap(run))(keys)
  for i in range(3):
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], batched), run(keys[i]),
                                rtol=1e-5, atol=1e-5)
  # Six iterations have not converged: different start vectors differ.
  assert not np.allclose(batched.lowest[0], batched.lowest[1], rtol=1e-3)
  # Vmapping over the point (a batch of tasks), as the iMAML example does.
  shifted = lambda p, s: loss(p) + s * jnp.sum(p["b"] ** 2)   # Hessian + 2s on part of it
  single = lambda s: extremes(lambda p: shifted(p, s), params, keys[0], num_iterations=20)
  ends = jax.jit(jax.vmap(single))(jnp.arange(3.0))
  for s, low, high in zip(range(3), ends.lowest, ends.highest):
    one = jax.jit(single)(jnp.float32(s))
    np.testing.assert_allclose([low, high], [one.lowest, one.highest], rtol=1e-5, atol=1e-5)


@hypothesis.settings(deadline=None, max_examples=6)
@hypothesis.given(params=pytrees(dtypes=FLOAT_DTYPES))
def test_low_precision_leaves_are_handled_in_float32(params):
  ends = extremes(smooth_loss, params, jax.random.PRNGKey(0), num_iterations=4)
  assert ends.lowest.dtype == jnp.float32 and ends.highest.dtype == jnp.float32
  assert np.isfinite(ends.lowest) and np.isfinite(ends.highest) and ends.lowest <= ends.highest


@pytest.mark.parametrize("kwargs,loss,params,match", [
    (dict(num_iterations=0), None, None, "num_iterations"),
    (dict(num_iterations=2.0), None, None, "num_iterations"),
    (dict(key=jnp.zeros(3)), None, None, "key"),
    (dict(), lambda x: x, None, "loss_fn"),
    (dict(), None, jnp.arange(3), "params"),
])
def test_bad_inputs_name_the_argument(kwargs, loss, params, match):
  args = dict(loss_fn=loss or (lambda x: jnp.sum(x ** 2)),
              params=jnp.ones(3) if params is None else params, key=jax.random.PRNGKey(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    extremes(**args)
