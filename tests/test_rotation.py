import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import tasks


def test_rotate_by_90_matches_rot90():
  img = jax.random.uniform(jax.random.PRNGKey(0), (2, 9, 9, 1))
  out = tasks.rotate(img, 90.0)
  np.testing.assert_allclose(out[..., 0], np.rot90(np.asarray(img[..., 0]), 1, axes=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(tasks.rotate(img, 0.0), img, atol=1e-6)


def test_rotate_is_differentiable_in_angle():
  img = jnp.zeros((1, 15, 15, 1)).at[0, 7, 10, 0].set(1.0)
  target = tasks.rotate(img, 30.0)
  loss = lambda a: jnp.sum((tasks.rotate(img, a) - target) ** 2)
  g = jax.grad(loss)(20.0)
  assert np.isfinite(g) and g < 0     # increasing the angle towards 30 lowers the loss
  np.testing.assert_allclose(g, (loss(20.01) - loss(19.99)) / 0.02, rtol=0.05)


def test_rotation_task(omniglot):
  task = tasks.rotation_task(omniglot, num_classes=10, num_train=12, num_val=4, angle=30.0)
  assert task.train_x.shape == (120, 28, 28, 1) and task.val_x.shape == (40, 28, 28, 1)
  assert task.test_x.shape == (40, 28, 28, 1)
  assert set(np.asarray(task.train_y).tolist()) == set(range(10))
  with pytest.raises(ValueError, match="num_classes"):
    tasks.rotation_task(omniglot, num_classes=5000)
