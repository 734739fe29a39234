import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import models, tasks
from helpers import flat32

count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))


def _conv_problem():
  net = models.conv4(channels=4, num_blocks=2, num_classes=3, pooling="global_mean")
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 12, 12, 1))
  y = jnp.array([0, 1, 2, 0, 1, 2])
  params = net.init(jax.random.PRNGKey(1), x)
  loss = lambda p: models.protonet.loss(net.apply(p, x), y)
  return params, loss


@pytest.mark.parametrize("rule", [models.meta_curvature(0.1), models.klin(0.1)])
def test_identity_init_equals_sgd_for_one_step(rule):
  params, loss = _conv_problem()
  rp = rule.init(jax.random.PRNGKey(0), params)
  a = models.adapt(loss, params, rule, rp, steps=1).params
  b = models.adapt(loss, params, models.sgd(0.1), {}, steps=1).params
  chex.assert_trees_all_close(a, b, rtol=1e-5, atol=1e-6)


def test_klin_adapts_itself_in_the_inner_loop():
  params, loss = _conv_problem()
  rule = models.klin(0.1)
  rp = rule.init(jax.random.PRNGKey(0), params)
  out = models.adapt(loss, params, rule, rp, steps=2)
  assert not np.allclose(flat32(out.state), flat32(rp))     # eq. (4) moved xi
  frozen = models.klin(0.1, adapt_optimizer=False)
  out2 = models.adapt(loss, params, frozen, rp, steps=2)
  chex.assert_trees_all_equal(out2.state, rp)


def test_parameter_counts_match_paper():
  # A.1.1: 100-d logistic regression, KLin 10,001 and KFC (1 hidden layer) 20,002 params.
  lr = models.logistic_regression(1)
  params = lr.init(jax.random.PRNGKey(0), jnp.ones((1, 100)))
  klin_params = models.klin(1.0, normalize=False).init(jax.random.PRNGKey(0), params)
  kfc_params = models.kfc(1.0, normalize=False).init(jax.random.PRNGKey(0), params)
  assert count(klin_params) == 10_001 and count(kfc_params) == 20_002
  # A.1.1 Omniglot: KLin over a 784 -> 5 LR has m = 784, n = 5 (614k params).
  om = models.logistic_regression(5).init(jax.random.PRNGKey(0), jnp.ones((1, 784)))
  assert count(models.klin(1.0, normalize=False).init(jax.random.PRNGKey(0), om)) == 784**2 + 25
  # Conv kernels [3, 3, c_in, c_out]: factors HW x HW and C x C, shared across filters.
  conv_params, _ = _conv_problem()
  leaf = models.klin(1.0).init(jax.random.PRNGKey(0), conv_params)["conv1"]["w"]
  assert [f.shape for f in leaf["layers"][0]] == [(9, 9), (4, 4)]
  assert leaf["scale"] == 1.0


def test_kronecker_transform_is_L_G_R():
  g = jax.random.normal(jax.random.PRNGKey(0), (3, 2))
  left = jax.random.normal(jax.random.PRNGKey(1), (3, 3))
  right = jax.random.normal(jax.random.PRNGKey(2), (2, 2))
  params = {"w": jnp.zeros((3, 2))}
  rule = models.meta_curvature(1.0)
  rp = {"w": {"layers": [(left, right)]}}
  new, _ = rule.update(rp, rp, params, {"w": g}, loss=0.0, step=0, loss_fn=None)
  np.testing.assert_allclose(new["w"], -(left @ g @ right), rtol=1e-5)
  # vec(L G R) = (R^T kron L) vec(G): the Kronecker-factored matrix of eq. (5).
  np.testing.assert_allclose(np.kron(np.asarray(right).T, left) @ np.asarray(g).T.reshape(-1),
                             np.asarray(left @ g @ right).T.reshape(-1), rtol=1e-4)


def test_normalisation_rescale():
  params = {"w": jnp.zeros((2, 2))}
  g = {"w": jnp.array([[3.0, 0.0], [0.0, 4.0]])}
  rule = models.klin(1.0, adapt_optimizer=False)
  rp = rule.init(jax.random.PRNGKey(0), params)
  rp["w"]["scale"] = jnp.asarray(2.0)
  new, _ = rule.update(rp, rp, params, g, loss=0.0, step=0, loss_fn=None)
  np.testing.assert_allclose(new["w"], -2.0 * g["w"], rtol=1e-6)


def test_kfc_and_cfc_run_and_learnable():
  params, loss = _conv_problem()
  for rule in (models.kfc(0.05, num_layers=3), models.cfc(0.05, rank=2)):
    rp = rule.init(jax.random.PRNGKey(0), params)
    # Jitted: two programs, not one per eager op around the inner loop.
    out = jax.jit(lambda p, r: models.adapt(loss, p, rule, r, steps=2))(params, rp)
    chex.assert_trees_all_equal_shapes(out.params, params)
    meta = jax.jit(jax.grad(lambda r: loss(models.adapt(loss, params, rule, r,
                                                        steps=2).params)))(rp)
    assert np.all(np.isfinite(flat32(meta))) and np.any(flat32(meta) != 0)
  w = params["conv1"]["w"]
  cfc = models.cfc(0.05, rank=2).init(jax.random.PRNGKey(0), params)["conv1"]["w"]
  assert [m.shape for m in cfc["layers"]] == [(w.size, 2)] * 2
