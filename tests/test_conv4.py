import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import models


@pytest.mark.parametrize("channels", [16, 32, 64])
@pytest.mark.parametrize("num_blocks,size,expected", [
    (4, 28, 1), (3, 28, 3), (2, 28, 7), (1, 28, 14), (4, 32, 2)])
def test_embedding_shapes(channels, num_blocks, size, expected):
  # Shapes only: traced (jax.eval_shape), not run op by op.
  net = models.conv4(channels=channels, num_blocks=num_blocks)
  x = jnp.ones((3, size, size, 1))
  params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
  out = jax.eval_shape(net.apply, params, x)
  assert out.shape == (3, channels * expected * expected)
  assert not any("state" in k for k in params)


def test_classifier_head_and_parameter_count_of_paper():
  # meta_optimizers_kronecker.txt A.1.2: 4-layer CNN 112,586 params, 2-layer 38,474 (10-way).
  x = jnp.ones((2, 28, 28, 1))
  count = lambda p: sum(v.size for v in jax.tree_util.tree_leaves(p))
  net4 = models.conv4(channels=64, num_blocks=4, num_classes=10)
  p4 = jax.eval_shape(net4.init, jax.random.PRNGKey(0), x)     # shapes and counts only
  assert count(p4) == 112_586
  assert jax.eval_shape(net4.apply, p4, x).shape == (2, 10)
  net2 = models.conv4(channels=64, num_blocks=2, num_classes=10, pooling="global_mean")
  assert count(jax.eval_shape(net2.init, jax.random.PRNGKey(0), x)) == 38_474


def test_batch_statistics_normalise_each_batch():
  net = models.conv4(channels=8, num_blocks=1)
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1)) * 5 + 3
  params = net.init(jax.random.PRNGKey(0), x)
  # Pure function: no state, same output for the same batch.
  np.testing.assert_array_equal(net.apply(params, x), net.apply(params, x))
  norm = models.BatchStatNorm
  import haiku as hk
  f = hk.without_apply_rng(hk.transform(lambda v: norm()(v)))
  y = f.apply(f.init(None, x), x)
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-3)


def test_jit_vmap_pmap():
  net = models.conv4(channels=4, num_blocks=2)
  x = jnp.ones((4, 2, 28, 28, 1))
  params = net.init(jax.random.PRNGKey(0), x[0])
  a = jax.jit(jax.vmap(net.apply, in_axes=(None, 0)))(params, x)
  b = jax.pmap(net.apply, in_axes=(None, 0), devices=jax.devices()[:4])(params, x)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,arg", [(dict(num_blocks=0), "num_blocks"), (dict(num_blocks=5), "num_blocks"),
                                        (dict(channels=0), "channels"), (dict(pooling="max"), "pooling")])
def test_bad_config(kwargs, arg):
  with pytest.raises(ValueError, match=arg):
    models.conv4(**kwargs)


def test_bad_image_rank():
  net = models.conv4(channels=4)
  with pytest.raises(ValueError, match="images"):
    net.init(jax.random.PRNGKey(0), jnp.ones((28, 28, 1)))
