import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import flat32, pytrees, smooth_loss


@hypothesis.given(params=pytrees(), scheme=hypothesis.strategies.sampled_from(["forward", "central"]))
def test_exact_on_linear_functions(params, scheme):
  coeffs = jnp.linspace(-2.0, 3.0, flat32(params).shape[0])
  loss = lambda p: coeffs @ flat32(p) + 0.5
  g = jax.jit(lambda p: estimators.finite_difference(loss, p, None, step=1e-2, scheme=scheme,
                                                    chunk_size=2))(params)
  chex.assert_trees_all_equal_shapes_and_dtypes(g, params)
  # Exact up to float32 rounding of the loss values themselves.
  np.testing.assert_allclose(flat32(g), coeffs, rtol=1e-3, atol=2e-3)


def test_error_is_first_order_forward_second_order_central():
  with jax.enable_x64(True):
    params = {"x": jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float64)}
    loss = lambda p: jnp.sum(jnp.sin(p["x"]) + p["x"] ** 3)
    exact = np.asarray(jax.grad(loss)(params)["x"])
    def err(step, scheme):
      g = estimators.finite_difference(loss, params, None, step=step, scheme=scheme)
      return np.max(np.abs(np.asarray(g["x"]) - exact))
    # Halving h halves the forward error (O(h)) and quarters the central one (O(h^2)).
    assert 1.8 < err(1e-3, "forward") / err(5e-4, "forward") < 2.2
    assert 3.6 < err(1e-2, "central") / err(5e-3, "central") < 4.4


def test_matches_backprop_on_smooth_pytree():
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.3, -0.2])}
  g = estimators.finite_difference(smooth_loss, params, None, step=1e-2, scheme="central")
  chex.assert_trees_all_close(g, jax.grad(smooth_loss)(params), rtol=1e-3, atol=1e-3)


def test_non_finite_coordinates_get_zero():
  params = {"x": jnp.zeros(3)}
  loss = lambda p: jnp.where(p["x"][2] > 0, jnp.nan, jnp.sum(2.0 * p["x"]))
  g = estimators.finite_difference(loss, params, None, step=0.1)
  np.testing.assert_allclose(g["x"], [2.0, 2.0, 0.0], rtol=1e-5)


class FiniteDifferenceVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_variants_agree(self):
    params = {"x": jnp.linspace(0.0, 1.0, 7)}
    fn = lambda p: estimators.finite_difference(smooth_loss, p, None, chunk_size=3,
                                                step=1e-2, scheme="central")
    # Compiled and eager code round the loss differently; with h = 1e-2 that
    # moves the quotient by ~eps * L / h ~ 1e-5 relative.
    chex.assert_trees_all_close(self.variant(fn)(params), fn(params), rtol=1e-4, atol=1e-4)


def test_bad_scheme():
  with pytest.raises(ValueError, match="scheme"):
    estimators.finite_difference(smooth_loss, {"x": jnp.ones(2)}, None, scheme="backward")
