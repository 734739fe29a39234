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
  from metagrad.models._meta_lstm import preprocess
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


def _hand_written_first_order_lstm(theta0, rp, query_loss, steps):
  """Eq. (3.3) written out with Ravi & Larochelle's first-order assumption:
  the gradient and the loss fed to the gates are constants to the meta-gradient
  (stop_gradient), the cell state c = theta and the previous gates are not."""
  from metagrad.models._meta_lstm import preprocess
  from jax.flatten_util import ravel_pytree
  c, unravel = ravel_pytree(theta0)
  f_prev = i_prev = jnp.zeros_like(c)
  for _ in range(steps):
    loss, grad = jax.value_and_grad(lambda v: LOSS(unravel(v)))(c)
    loss, grad = jax.lax.stop_gradient(loss), jax.lax.stop_gradient(grad)
    shared = jnp.concatenate([preprocess(grad), jnp.broadcast_to(preprocess(loss), grad.shape + (2,)),
                              c[:, None]], axis=1)
    f = jax.nn.sigmoid(jnp.concatenate([shared, f_prev[:, None]], 1) @ rp["w_f"] + rp["b_f"])
    i = jax.nn.sigmoid(jnp.concatenate([shared, i_prev[:, None]], 1) @ rp["w_i"] + rp["b_i"])
    c, f_prev, i_prev = f * c - i * grad, f, i
  return query_loss(unravel(c))


def test_first_order_matches_hand_written_eq_3_3():
  # Large gate weights make the loss input matter (w . preprocess(L)); at the
  # paper's init (|W| <= 0.01) the difference is too small to see.
  rp = {"w_f": jnp.array([0.3, -0.2, 0.8, 0.5, 0.1, 0.2]), "b_f": jnp.asarray(2.0),
        "w_i": jnp.array([-0.4, 0.3, 1.5, -0.7, 0.2, 0.3]), "b_i": jnp.asarray(-2.0)}
  query = lambda p: jnp.mean((NET.apply(p, X + 0.3) - jnp.sin(X + 0.3)) ** 2)
  rule = models.meta_lstm()
  ours = jax.grad(lambda m: query(models.adapt(LOSS, m[0], rule, m[1], steps=3,
                                               first_order=True).params))((PARAMS, rp))
  reference = jax.grad(lambda m: _hand_written_first_order_lstm(m[0], m[1], query, 3))((PARAMS, rp))
  chex.assert_trees_all_close(ours, reference, rtol=1e-4, atol=1e-7)
  # The test can fail: letting the loss input carry gradient (the earlier
  # behaviour) changes the meta-gradient of the gate weights measurably.
  def loss_not_stopped(m):
    rule_open = models.UpdateRule(rule.init, rule.init_state,
                                  lambda r, s, p, g, **kw: rule.update(r, s, p, g,
                                                                       **{**kw, "loss": LOSS(p)}))
    return query(models.adapt(LOSS, m[0], rule_open, m[1], steps=3, first_order=True).params)
  leaky = jax.grad(loss_not_stopped)((PARAMS, rp))
  gap = np.abs(flat32(leaky[1]) - flat32(reference[1])).max()
  assert gap > 1e-3 * np.abs(flat32(reference[1])).max()
