import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np

from metagrad import estimators
from helpers import FLOAT_DTYPES, pytrees, smooth_loss


@hypothesis.given(params=pytrees(), chunk=hypothesis.strategies.sampled_from([None, 1, 3]))
def test_equals_backprop_on_any_pytree(params, chunk):
  # Jitted (one program per drawn structure); the eager path is a variant below.
  exact = jax.jit(lambda p: estimators.backprop(smooth_loss, p, None))(params)
  fm = jax.jit(lambda p: estimators.forward_mode(smooth_loss, p, None, chunk_size=chunk))(params)
  chex.assert_trees_all_equal_shapes_and_dtypes(fm, params)
  chex.assert_trees_all_close(fm, exact, rtol=1e-5, atol=1e-5)


class ForwardModeVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_equals_backprop(self):
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    fm = self.variant(lambda p: estimators.forward_mode(smooth_loss, p, None, chunk_size=5))(params)
    chex.assert_trees_all_close(fm, jax.grad(smooth_loss)(params), rtol=1e-5, atol=1e-5)


def _unrolled_loss(steps):
  """A loss with a `steps`-long inner loop (gradient descent on a quadratic)."""
  def loss(p):
    def body(x, _):
      return x - 0.1 * (jnp.tanh(x) * p["scale"] + x), None
    x, _ = jax.lax.scan(body, p["x0"], None, length=steps)
    return jnp.sum(x**2)
  return loss


def _temp_bytes(estimator, steps, params):
  fn = jax.jit(lambda p: estimator(_unrolled_loss(steps), p, None))
  return fn.lower(params).compile().memory_analysis().temp_size_in_bytes


def test_memory_does_not_grow_with_inner_loop_length():
  params = {"x0": jnp.ones(256), "scale": jnp.ones(256)}
  fm = lambda l, p, k: estimators.forward_mode(l, p, k, chunk_size=16)
  short, long = _temp_bytes(fm, 5, params), _temp_bytes(fm, 200, params)
  assert long <= 1.1 * short + 4096, (short, long)
  # The same measurement does see reverse mode's tape grow (the test can fail).
  bp_short, bp_long = (_temp_bytes(estimators.backprop, 5, params),
                       _temp_bytes(estimators.backprop, 200, params))
  assert bp_long > 10 * bp_short, (bp_short, bp_long)


def test_mixed_dtypes_round_trip():
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float16), "c": jnp.ones(2)}
  g = estimators.forward_mode(smooth_loss, params, None)
  chex.assert_trees_all_equal_shapes_and_dtypes(g, params)
  chex.assert_trees_all_close(g, jax.grad(smooth_loss)(params), rtol=2e-2, atol=2e-2)
