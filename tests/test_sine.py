import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import tasks


def test_ranges_and_function():
  batch = tasks.sample_sine_tasks(jax.random.PRNGKey(0), num=2000, shot=5, query=10)
  assert batch.support_x.shape == (2000, 5, 1) and batch.query_y.shape == (2000, 10, 1)
  a, p, x = np.asarray(batch.amplitude), np.asarray(batch.phase), np.asarray(batch.support_x)
  assert a.min() >= 0.1 and a.max() <= 5.0 and abs(a.mean() - 2.55) < 0.1
  assert p.min() >= 0.0 and p.max() <= np.pi and abs(p.mean() - np.pi / 2) < 0.1
  assert x.min() >= -5.0 and x.max() <= 5.0
  np.testing.assert_allclose(batch.support_y, a[:, None, None] * np.sin(x - p[:, None, None]),
                             rtol=1e-5, atol=1e-5)


def test_same_key_same_task():
  chex.assert_trees_all_equal(tasks.sample_sine_task(jax.random.PRNGKey(1)),
                              tasks.sample_sine_task(jax.random.PRNGKey(1)))
  assert tasks.sample_sine_task(jax.random.PRNGKey(1)).amplitude != \
      tasks.sample_sine_task(jax.random.PRNGKey(2)).amplitude


def test_bad_shot():
  with pytest.raises(ValueError, match="shot"):
    tasks.sample_sine_task(jax.random.PRNGKey(0), shot=0)
