import jax
import jax.numpy as jnp
import numpy as np

from metagrad.tasks import evograd_toy as toy


def test_closed_form_hypergradient_is_derivative_at_optimum():
  for lam in [0.0, 0.5, 1.0, 1.7]:
    numeric = jax.grad(lambda l: toy.val_loss(toy.optimal_x(l), l))(jnp.float32(lam))
    np.testing.assert_allclose(numeric, toy.true_hypergradient(lam), rtol=1e-5, atol=1e-7)
    assert abs(float(jax.grad(toy.train_loss)(toy.optimal_x(jnp.float32(lam)), lam))) < 1e-6
