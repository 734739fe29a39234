import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators

# evograd.txt section 4.1.
train_loss = lambda x, lam: jnp.sum((x - 1.0) ** 2 + lam * x**2)
val_loss = lambda x, lam: jnp.sum((x - 0.5) ** 2)
truth = lambda lam: (lam - 1.0) / (lam + 1.0) ** 3


def _mean_estimates(population, lams, repeats=100):
  def one(lam, key):
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (), minval=0.0, maxval=1.0)  # random x, as in Fig. 2
    return estimators.evograd(train_loss, val_loss, x, lam, ke, population=population,
                              sigma=1.0, temperature=0.5)
  keys = jax.random.split(jax.random.PRNGKey(0), repeats)
  return np.asarray(jax.jit(jax.vmap(lambda l: jax.vmap(lambda k: one(l, k))(keys)))(lams))


def test_tracks_closed_form_hypergradient_section_4_1():
  lams = jnp.linspace(0.0, 2.0, 11)
  est100 = _mean_estimates(100, lams).mean(1)
  est2 = _mean_estimates(2, lams).mean(1)
  t = np.asarray(truth(lams))
  assert np.corrcoef(est100, t)[0, 1] > 0.98
  clear = np.abs(t) > 0.02
  np.testing.assert_array_equal(np.sign(est100[clear]), np.sign(t[clear]))
  # More copies, closer to the truth (Fig. 2).
  assert np.abs(est100 - t).mean() < np.abs(est2 - t).mean()


def test_evolutionary_step_is_softmax_weighted_combination():
  key = jax.random.PRNGKey(4)
  theta = {"w": jnp.array([0.2, -0.4, 1.0])}
  lam = jnp.array(0.7)
  loss = lambda p, l: jnp.sum((p["w"] - 1.0) ** 2 + l * p["w"] ** 2)
  star = estimators.evolutionary_step(loss, theta, lam, key, population=5, sigma=0.3,
                                      temperature=0.1)
  # Reference noise drawn here, from the documented key scheme.
  eps = np.stack([np.asarray(0.3 * jax.random.normal(jax.random.split(jax.random.fold_in(key, k), 1)[0],
                                                     (3,))) for k in range(5)])
  np.testing.assert_allclose(
      eps[2], estimators.member_noise(key, 2, theta, sigma=0.3)["w"], rtol=1e-6)
  members = np.asarray(theta["w"]) + eps
  losses = np.array([float(loss({"w": m}, lam)) for m in members])
  w = np.exp(-(losses - losses.min()) / 0.1)
  w /= w.sum()
  np.testing.assert_allclose(star["w"], w @ members, rtol=1e-5, atol=1e-6)


def test_sign_noise_has_magnitude_sigma():
  theta = jnp.zeros(50)
  zero_loss = lambda p, l: 0.0 * jnp.sum(p) + l  # equal losses: equal weights 1/K
  star = estimators.evolutionary_step(zero_loss, theta, jnp.float32(0.0), jax.random.PRNGKey(0),
                                      population=1 * 2, sigma=1e-3, noise="sign")
  # Mean of two +/-sigma vectors: each entry is 0 or +/-sigma.
  np.testing.assert_allclose(np.unique(np.abs(np.asarray(star))), [0.0, 1e-3], atol=1e-9)


def test_sign_noise_is_fair_and_independent_across_leaves_and_members():
  params = {"a": jnp.zeros((37, 29)), "b": jnp.zeros(5000)}  # sizes not multiples of 32
  key = jax.random.PRNGKey(3)
  e0 = estimators.member_noise(key, 0, params, sigma=0.25, noise="sign")
  e1 = estimators.member_noise(key, 1, params, sigma=0.25, noise="sign")
  chex.assert_trees_all_equal_shapes_and_dtypes(e0, params)
  for leaf in jax.tree_util.tree_leaves((e0, e1)):
    np.testing.assert_array_equal(np.abs(np.asarray(leaf)), 0.25)
    # Fraction of + signs: Binomial(n, 1/2), within 5 standard errors of 1/2.
    n = leaf.size
    assert abs(float((leaf > 0).mean()) - 0.5) < 5 * 0.5 / np.sqrt(n)
  # Members and leaves agree on a sign about half the time (independent draws).
  for x, y in [(e0["b"], e1["b"]), (e0["a"].ravel(), e0["b"][:37 * 29])]:
    n = x.size
    assert abs(float((x == y).mean()) - 0.5) < 5 * 0.5 / np.sqrt(n)
  # Neighbouring bits of one word are not correlated: lag-1 agreement ~ 1/2.
  b = np.asarray(e0["b"])
  assert abs(float((b[1:] == b[:-1]).mean()) - 0.5) < 5 * 0.5 / np.sqrt(b.size)


@pytest.mark.parametrize("noise", ["normal", "sign"])
def test_unrolled_and_vmapped_members_agree(monkeypatch, noise):
  key = jax.random.PRNGKey(5)
  theta = {"w": jnp.linspace(-1.0, 1.0, 7), "b": jnp.array(0.3)}
  lam = jnp.array(0.4)
  loss = lambda p, l: jnp.sum((p["w"] - p["b"]) ** 2 + l * p["w"] ** 2)
  step = lambda: estimators.evolutionary_step(loss, theta, lam, key, population=4, sigma=0.2,
                                              temperature=0.3, noise=noise)
  unrolled = step()
  # The module, not the function of the same name that the package re-exports.
  module = importlib.import_module("metagrad.estimators._evograd")
  monkeypatch.setattr(module, "UNROLL_MAX_POPULATION", 0)
  chex.assert_trees_all_close(step(), unrolled, rtol=1e-6, atol=1e-7)


def test_any_first_order_estimator_on_the_bilevel_objective():
  key = jax.random.PRNGKey(1)
  x, lam = jnp.array(0.3), jnp.array(0.5)
  kwargs = dict(population=4, sigma=0.5, temperature=0.5)
  ref = estimators.evograd(train_loss, val_loss, x, lam, key, **kwargs)
  objective = estimators.evolutionary_objective(train_loss, val_loss, x, key, **kwargs)
  np.testing.assert_allclose(estimators.forward_mode(objective, lam, None), ref, rtol=1e-5)
  np.testing.assert_allclose(
      estimators.finite_difference(objective, lam, None, scheme="central", step=1e-3),
      ref, rtol=1e-2)


class EvogradVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_variants_agree_and_shape_like_hparams(self):
    params = {"w": jnp.linspace(-1, 1, 6)}
    hparams = {"decay": jnp.array(0.1), "shift": jnp.ones(6, jnp.bfloat16)}
    tl = lambda p, h: jnp.sum((p["w"] - h["shift"].astype(jnp.float32)) ** 2 + h["decay"] * p["w"] ** 2)
    vl = lambda p, h: jnp.sum((p["w"] - 0.5) ** 2)
    fn = lambda k: estimators.evograd(tl, vl, params, hparams, k, population=3)
    out = self.variant(fn)(jax.random.PRNGKey(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(out, hparams)
    chex.assert_trees_all_close(out, fn(jax.random.PRNGKey(0)), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("kwargs,name", [
    (dict(sigma=0.0), "sigma"), (dict(temperature=-1.0), "temperature"),
    (dict(population=1), "population"), (dict(noise="uniform"), "noise")])
def test_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    estimators.evograd(train_loss, val_loss, jnp.array(0.3), jnp.array(0.5),
                       jax.random.PRNGKey(0), **kwargs)


def test_non_scalar_val_loss_rejected():
  with pytest.raises(ValueError, match="val_loss"):
    estimators.evograd(train_loss, lambda x, l: jnp.stack([x, l]), jnp.array(0.3),
                       jnp.array(0.5), jax.random.PRNGKey(0))
