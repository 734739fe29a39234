import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import models
from helpers import flat32

NET = models.mlp(hidden=(6,))
X = jnp.linspace(-2, 2, 8)[:, None]
Y = jnp.sin(X)
PARAMS = NET.init(jax.random.PRNGKey(0), X)
LOSS = lambda p: jnp.mean((NET.apply(p, X) - Y) ** 2)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5])
def test_theorem_1_lstm_reproduces_gradient_descent(alpha):
  rule = models.meta_lstm()
  lstm = models.adapt(LOSS, PARAMS, rule, models.gradient_descent_params(alpha), steps=5)
  sgd = models.adapt(LOSS, PARAMS, models.sgd(alpha), {}, steps=5)
  chex.assert_trees_all_close(lstm.params, sgd.params, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(lstm.inner_losses, sgd.inner_losses, rtol=1e-5)


def test_paper_initialisation():
  rp = models.meta_lstm().init(jax.random.PRNGKey(0), PARAMS)
  assert 4.0 <= rp["b_f"] <= 6.0 and -5.0 <= rp["b_i"] <= -4.0
  assert np.all(np.abs(rp["w_f"]) <= 0.01) and rp["w_f"].shape == (6,)
  # Initial behaviour: forget ~ 1 (no decay), learning rate ~ sigmoid(-4.5) ~ 0.01.
  out = models.adapt(LOSS, PARAMS, models.meta_lstm(), rp, steps=1)
  f, i = out.state["f"], out.state["i"]
  assert np.all(f > 0.98) and np.all((i > 0.005) & (i < 0.02))


def test_preprocessing():
  from metagrad.models.meta_lstm import preprocess
  x = jnp.array([1.0, -1e-6, 0.0, -100.0])
  p = preprocess(x)
  np.testing.assert_allclose(p[0], [0.0, 1.0], atol=1e-7)
  np.testing.assert_allclose(p[1], [-1.0, np.exp(10) * -1e-6], rtol=1e-5)
  np.testing.assert_allclose(p[3], [np.log(100) / 10, -1.0], rtol=1e-6)


def test_gates_feed_back_and_meta_gradient_flows():
  rule = models.meta_lstm()
  rp = rule.init(jax.random.PRNGKey(1), PARAMS)
  meta = jax.grad(lambda r: LOSS(models.adapt(LOSS, PARAMS, rule, r, steps=3).params))(rp)
  assert all(np.isfinite(v).all() for v in jax.tree_util.tree_leaves(meta))
  assert abs(float(meta["b_i"])) > 0


def test_bad_lr_for_theorem():
  with pytest.raises(ValueError, match="lr"):
    models.gradient_descent_params(1.5)
