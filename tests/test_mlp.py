import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import models

count = lambda p: sum(v.size for v in jax.tree_util.tree_leaves(p))


def test_sine_mlp_is_1_40_40_1():
  net = models.mlp()
  params = net.init(jax.random.PRNGKey(0), jnp.ones((5, 1)))
  assert count(params) == (1 * 40 + 40) + (40 * 40 + 40) + (40 + 1)
  assert net.apply(params, jnp.ones((5, 1))).shape == (5, 1)


def test_logistic_regression_and_linnet_same_function_class():
  x = jax.random.normal(jax.random.PRNGKey(0), (7, 100))
  lr, linnet = models.logistic_regression(), models.linear_network()
  p_lr, p_ln = lr.init(jax.random.PRNGKey(1), x), linnet.init(jax.random.PRNGKey(1), x)
  assert count(p_lr) == 101
  assert len(p_ln) == 4
  # LinNet has no nonlinearity: it collapses to one affine map.
  w = jnp.eye(100)
  b = jnp.zeros(100)
  for name in ["linear0", "linear1", "linear2", "logits"]:
    b = b @ p_ln[name]["w"] + p_ln[name]["b"]
    w = w @ p_ln[name]["w"]
  np.testing.assert_allclose(linnet.apply(p_ln, x), x @ w + b[None, :], rtol=1e-4, atol=1e-5)


def test_lenet_shapes():
  net = models.lenet(10)
  x = jnp.ones((3, 28, 28, 1))
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)    # shapes: traced, not run
  assert jax.eval_shape(net.apply, params, x).shape == (3, 10)
  with pytest.raises(ValueError, match="images"):
    jax.eval_shape(net.apply, params, jnp.ones((28, 28)))
