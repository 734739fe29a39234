import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import Quadratic


class BackpropTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_matches_analytic_gradient(self):
    q = Quadratic(dim=5)
    grads = self.variant(lambda p: estimators.backprop(q.loss, p, None))(q.params)
    np.testing.assert_allclose(grads["x"], q.grad()["x"], rtol=1e-5, atol=1e-6)


def test_non_scalar_loss_is_rejected():
  with pytest.raises(ValueError, match="loss_fn"):
    estimators.backprop(lambda p: p["x"] * 2, {"x": jnp.ones(3)}, None)


def test_integer_leaf_is_rejected():
  with pytest.raises(ValueError, match=r"params.*\['n'\].*int"):
    estimators.backprop(lambda p: p["x"].sum(), {"x": jnp.ones(3), "n": jnp.arange(3)}, None)
