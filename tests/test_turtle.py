import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import models
from helpers import flat32

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}
LOSS = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 1.0) ** 2)


def test_default_meta_network_is_five_hidden_layers_of_20():
  rule = models.turtle()
  rp = rule.init(jax.random.PRNGKey(0), PARAMS)
  shapes = [v["w"].shape for v in rp["net"].values()]
  assert shapes == [(1, 20)] + [(20, 20)] * 4 + [(20, 1)]
  chex.assert_trees_all_equal(rp["alpha"], jax.tree_util.tree_map(jnp.ones_like, PARAMS))


def test_update_is_theta_plus_alpha_times_g_phi():
  rule = models.turtle(hidden=(5,))
  rp = rule.init(jax.random.PRNGKey(0), PARAMS)
  rp["alpha"] = {"w": jnp.array([0.0, 1.0, 2.0]), "b": jnp.array([0.5])}
  grads = jax.grad(LOSS)(PARAMS)
  new, _ = rule.update(rp, (), PARAMS, grads, loss=LOSS(PARAMS), step=0, loss_fn=LOSS)
  flat_g = flat32(grads)
  net_out = jax.nn.relu(flat_g[:, None] @ rp["net"]["g_phi/~/linear_0"]["w"]
                        + rp["net"]["g_phi/~/linear_0"]["b"][None, :])
  net_out = (net_out @ rp["net"]["g_phi/~/linear_1"]["w"]
             + rp["net"]["g_phi/~/linear_1"]["b"][None, :])[:, 0]
  alpha = flat32(rp["alpha"])
  np.testing.assert_allclose(flat32(new), flat32(PARAMS) + alpha * net_out, rtol=1e-5, atol=1e-6)


def test_ema_history_follows_eq_3_6():
  rule = models.turtle(hidden=(4,), inputs=("gradient", "ema_gradient"), beta=0.7)
  rp = rule.init(jax.random.PRNGKey(0), PARAMS)
  out = models.adapt(LOSS, PARAMS, rule, rp, steps=3)
  # Recompute h by hand along the same trajectory.
  h = np.zeros(4)
  theta = PARAMS
  state = rule.init_state(rp, PARAMS)
  for t in range(3):
    g = jax.grad(LOSS)(theta)
    h = 0.7 * h + 0.3 * np.asarray(flat32(g))
    theta, state = rule.update(rp, state, theta, g, loss=LOSS(theta), step=t, loss_fn=LOSS)
  np.testing.assert_allclose(out.state, h, rtol=1e-5, atol=1e-6)


def test_bad_inputs():
  with pytest.raises(ValueError, match="inputs"):
    models.turtle(inputs=("hessian",))
  with pytest.raises(ValueError, match="beta"):
    models.turtle(inputs=("ema_update",), beta=1.5)
