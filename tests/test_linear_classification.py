import jax
import jax.numpy as jnp
import numpy as np

from metagrad import tasks


def test_labels_are_sign_of_boundary_projection():
  pools = tasks.make_task_pools(jax.random.PRNGKey(0), dim=100, num_train=50, num_val=10, num_test=10)
  assert pools.train.shape == (50, 100)
  task = tasks.sample_linear_task(jax.random.PRNGKey(1), pools.test[3], shot=20, query=200)
  x = np.concatenate([task.support_x, task.query_x])
  y = np.concatenate([task.support_y, task.query_y])
  np.testing.assert_array_equal(y, (x @ np.asarray(pools.test[3]) > 0).astype(int))
  assert 0.35 < y.mean() < 0.65


def test_pools_are_fixed_and_disjoint():
  a = tasks.make_task_pools(jax.random.PRNGKey(0), num_train=20, num_val=5, num_test=5)
  b = tasks.make_task_pools(jax.random.PRNGKey(0), num_train=20, num_val=5, num_test=5)
  np.testing.assert_array_equal(a.train, b.train)
  rows = lambda m: {r.tobytes() for r in np.asarray(m)}
  assert not rows(a.train) & rows(a.test) and not rows(a.val) & rows(a.test)


def test_sample_from_pool_uses_pool_boundaries():
  pools = tasks.make_task_pools(jax.random.PRNGKey(0), dim=5, num_train=3, num_val=1, num_test=1)
  task = tasks.sample_from_pool(jax.random.PRNGKey(4), pools.train, shot=400, query=1)
  agree = [np.mean((np.asarray(task.support_x) @ np.asarray(w) > 0) == np.asarray(task.support_y))
           for w in pools.train]
  assert max(agree) == 1.0
