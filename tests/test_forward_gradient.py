import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import Quadratic, assert_unbiased, flat32, mean_over_keys


def test_unbiased_on_quadratic():
  q = Quadratic(dim=6)
  samples = mean_over_keys(estimators.forward_gradient, q.loss, q.params, 20000)
  assert_unbiased(samples, flat32(q.grad()))


def test_per_direction_variance_matches_theory():
  # Var[(g.v) v_j] = |g|^2 + g_j^2 for v ~ N(0, I): checks direction scale.
  q = Quadratic(dim=4)
  samples = mean_over_keys(estimators.forward_gradient, q.loss, q.params, 40000, seed=1)
  g = np.asarray(flat32(q.grad()))
  np.testing.assert_allclose(samples.var(0), g @ g + g**2, rtol=0.08)


def test_more_directions_average_down():
  q = Quadratic(dim=6)
  est = lambda l, p, k: estimators.forward_gradient(l, p, k, population=64, chunk_size=16)
  samples = mean_over_keys(est, q.loss, q.params, 400)
  g = np.asarray(flat32(q.grad()))
  np.testing.assert_allclose(samples.var(0), (g @ g + g**2) / 64, rtol=0.25)
  assert_unbiased(samples, g)


def test_same_key_same_result_and_chunk_invariance():
  q = Quadratic(dim=6)
  key = jax.random.PRNGKey(3)
  a = estimators.forward_gradient(q.loss, q.params, key, population=10)
  b = estimators.forward_gradient(q.loss, q.params, key, population=10, chunk_size=3)
  chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-5)
  c = estimators.forward_gradient(q.loss, q.params, jax.random.PRNGKey(4), population=10)
  assert not np.allclose(flat32(a), flat32(c))


def test_bad_population():
  q = Quadratic()
  with pytest.raises(ValueError, match="population"):
    estimators.forward_gradient(q.loss, q.params, jax.random.PRNGKey(0), population=0)
