import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import Quadratic, cosine, flat32


def _eq9_reference(loss, x, key, sigma, population):
  """Eq. (9) of es_protonet_tpu.txt written out with a materialised population."""
  eps = np.stack([sigma * np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape))
                  for i in range(population)])
  losses = np.array([float(loss({"x": x + e})) for e in eps])
  w = (losses - losses.mean()) / losses.std()
  return (w[:, None] * eps).sum(0) / population


@pytest.mark.parametrize("sigma,population", [(0.01, 16), (0.1, 7)])
def test_matches_equation_9(sigma, population):
  q = Quadratic(dim=5)
  key = jax.random.PRNGKey(11)
  g = estimators.es_wsr(q.loss, q.params, key, sigma=sigma, population=population)
  ref = _eq9_reference(q.loss, np.asarray(q.params["x"]), key, sigma, population)
  np.testing.assert_allclose(g["x"], ref, rtol=1e-4, atol=1e-7)


def test_is_sigma_squared_times_standardized_es():
  # eq. (9) has no 1/sigma: g_wsr = sigma^2 * es(shaping="standardize").
  q = Quadratic(dim=5)
  key = jax.random.PRNGKey(3)
  wsr = estimators.es_wsr(q.loss, q.params, key, sigma=0.1, population=32, antithetic=True)
  es = estimators.es(q.loss, q.params, key, sigma=0.1, population=32, shaping="standardize")
  np.testing.assert_allclose(wsr["x"], 0.01 * es["x"], rtol=1e-4)


def test_alignment_improves_with_population():
  q = Quadratic(dim=20)
  def mean_cosine(population):
    # One compiled program per population (eager calls would re-trace it per key).
    estimate = jax.jit(lambda k: estimators.es_wsr(q.loss, q.params, k, population=population,
                                                   chunk_size=512))
    keys = jax.random.split(jax.random.PRNGKey(0), 12)
    return np.mean([cosine(estimate(k), q.grad()) for k in keys])
  small, medium, large = mean_cosine(8), mean_cosine(128), mean_cosine(2048)
  assert small < medium < large
  assert large > 0.9 and small < 0.8


def test_descent_direction_lowers_the_loss():
  q = Quadratic(dim=10)
  params = q.params
  estimate = jax.jit(lambda p, k: estimators.es_wsr(q.loss, p, k, sigma=0.01, population=64))
  for i in range(50):
    g = estimate(params, jax.random.PRNGKey(i))
    params = jax.tree_util.tree_map(lambda p, d: p - 1.0 * d, params, g)
  assert q.loss(params) < 0.5 * q.loss(q.params)


def test_all_equal_losses_give_zero_not_nan():
  g = estimators.es_wsr(lambda p: 0.0 * p["x"].sum() + 1.0, {"x": jnp.ones(4)},
                        jax.random.PRNGKey(0))
  np.testing.assert_array_equal(g["x"], np.zeros(4))


def test_nan_members_dropped():
  q = Quadratic(dim=4)
  poisoned = lambda p: jnp.where(p["x"][1] > q.params["x"][1] + 0.01, jnp.inf, q.loss(p))
  g = estimators.es_wsr(poisoned, q.params, jax.random.PRNGKey(0), population=64)
  assert np.all(np.isfinite(g["x"])) and np.any(g["x"] != 0)
