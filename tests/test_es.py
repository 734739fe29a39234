import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import Quadratic, assert_unbiased, cosine, flat32, mean_over_keys


@pytest.mark.parametrize("antithetic", [True, False])
def test_shaping_none_is_unbiased_on_quadratic(antithetic):
  # For a quadratic, grad E[L(x + sigma z)] = grad L(x) exactly.
  q = Quadratic(dim=5)
  est = functools.partial(estimators.es, sigma=0.1, population=8, antithetic=antithetic)
  samples = mean_over_keys(est, q.loss, q.params, 6000 if antithetic else 40000)
  assert_unbiased(samples, flat32(q.grad()))


def test_unbiased_for_smoothed_gradient_of_non_quadratic():
  # L = sum cos(x): grad E[L(x + sigma z)] = -exp(-sigma^2/2) sin(x), not -sin(x).
  params = {"x": jnp.linspace(-1.0, 1.2, 4)}
  loss = lambda p: jnp.sum(jnp.cos(p["x"]))
  sigma = 0.8
  est = functools.partial(estimators.es, sigma=sigma, population=16)
  samples = mean_over_keys(est, loss, params, 8000)
  smoothed = -np.exp(-sigma**2 / 2) * np.sin(np.asarray(params["x"]))
  assert_unbiased(samples, smoothed)
  # ... and the plain gradient is many standard errors away: the test can tell.
  se = samples.std(0) / np.sqrt(len(samples))
  assert np.max(np.abs(samples.mean(0) + np.sin(np.asarray(params["x"]))) / se) > 10


@pytest.mark.parametrize("shaping", ["standardize", "centered_rank"])
def test_shaped_estimates_align_with_gradient(shaping):
  q = Quadratic(dim=8)
  g = estimators.es(q.loss, q.params, jax.random.PRNGKey(0), sigma=0.05,
                    population=2048, shaping=shaping, chunk_size=256)
  assert cosine(g, q.grad()) > 0.95


@pytest.mark.parametrize("shaping", ["none", "standardize", "centered_rank"])
def test_chunking_does_not_change_result(shaping):
  q = Quadratic(dim=7)
  key = jax.random.PRNGKey(1)
  run = lambda c: jax.jit(lambda p: estimators.es(q.loss, p, key, sigma=0.1, population=30,
                                                  shaping=shaping, chunk_size=c))(q.params)
  chex.assert_trees_all_close(run(None), run(4), run(7), rtol=1e-5, atol=1e-6)


def test_same_key_same_result_different_key_different_result():
  q = Quadratic(dim=4)
  run = lambda k: flat32(estimators.es(q.loss, q.params, jax.random.PRNGKey(k), sigma=0.1, population=6))
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.allclose(run(0), run(1))


@pytest.mark.parametrize("shaping", ["none", "standardize", "centered_rank"])
def test_all_equal_losses_give_zero(shaping):
  params = {"x": jnp.ones(5)}
  g = estimators.es(lambda p: jnp.float32(3.0) + 0 * p["x"].sum(), params,
                    jax.random.PRNGKey(0), sigma=0.1, population=8, shaping=shaping)
  np.testing.assert_array_equal(g["x"], np.zeros(5))


@pytest.mark.parametrize("shaping", ["none", "standardize", "centered_rank"])
def test_non_finite_members_get_zero_weight(shaping):
  q = Quadratic(dim=4)
  key = jax.random.PRNGKey(2)
  # The loss is NaN wherever the first coordinate was pushed up by > 0.1.
  x0 = q.params["x"][0]
  poisoned = lambda p: jnp.where(p["x"][0] > x0 + 0.1, jnp.nan, q.loss(p))
  g = estimators.es(poisoned, q.params, key, sigma=0.1, population=64,
                    antithetic=False, shaping=shaping)
  assert np.all(np.isfinite(g["x"]))
  # Reference: the same members, NaN ones dropped by hand.
  z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (4,)))(jnp.arange(64))
  losses = jax.vmap(lambda zi: poisoned({"x": q.params["x"] + 0.1 * zi}))(z)
  keep = np.isfinite(losses)
  assert 0 < (~keep).sum() < 64
  l, zk = np.asarray(losses)[keep], np.asarray(z)[keep]
  if shaping == "none":
    w = l
  elif shaping == "standardize":
    w = (l - l.mean()) / l.std()
  else:
    w = np.argsort(np.argsort(l)) / (len(l) - 1) - 0.5
  np.testing.assert_allclose(g["x"], w @ zk / (len(l) * 0.1), rtol=2e-4, atol=1e-5)


def test_all_non_finite_gives_nan_not_zero():
  g = estimators.es(lambda p: jnp.nan * p["x"].sum(), {"x": jnp.ones(3)},
                    jax.random.PRNGKey(0), sigma=0.1, population=4)
  assert np.all(np.isnan(g["x"]))


def test_peak_memory_is_chunk_not_population():
  dim, population, chunk = 20000, 1024, 8
  params = {"x": jnp.zeros(dim)}
  loss = lambda p: jnp.sum(jnp.sin(p["x"]))
  def temp(chunk):
    fn = jax.jit(lambda p, k: estimators.es(loss, p, k, sigma=0.1, population=population,
                                            chunk_size=chunk))
    return fn.lower(params, jax.random.PRNGKey(0)).compile().memory_analysis().temp_size_in_bytes
  full_matrix = population * dim * 4
  chunked = temp(chunk)
  # A handful of chunk-sized buffers, independent of the population ...
  assert chunked <= 8 * chunk * dim * 4, (chunked, chunk * dim * 4)
  # ... while the unchunked program really holds the P x D population.
  assert temp(None) >= full_matrix / 2, (temp(None), full_matrix)


class EsVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_variants_agree(self):
    q = Quadratic(dim=4)
    key = jax.random.PRNGKey(5)
    fn = lambda p, k: estimators.es(q.loss, p, k, sigma=0.1, population=10, chunk_size=4)
    chex.assert_trees_all_close(self.variant(fn)(q.params, key), fn(q.params, key),
                                rtol=1e-5, atol=1e-6)
