import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators

train_loss = lambda x, lam: jnp.sum((x - 1.0) ** 2 + lam * x**2)
val_loss = lambda x, lam: jnp.sum((x - 0.5) ** 2)


@pytest.mark.parametrize("x,lam,eta", [(0.3, 0.5, 0.1), (-1.2, 1.5, 0.05), (2.0, 0.0, 0.3)])
def test_equals_analytic_one_step_hypergradient(x, lam, eta):
  # x' = x - eta (2 (x - 1) + 2 lam x);  dx'/dlam = -2 eta x;  result = 2 (x' - 0.5) dx'/dlam.
  x_new = x - eta * (2 * (x - 1) + 2 * lam * x)
  expected = 2 * (x_new - 0.5) * (-2 * eta * x)
  got = estimators.t1_t2(train_loss, val_loss, jnp.float32(x), jnp.float32(lam), None, inner_lr=eta)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_direct_term_included():
  # val_loss depending on lam directly adds dl_V/dlam.
  vl = lambda x, lam: jnp.sum((x - 0.5) ** 2) + 3.0 * lam
  a = estimators.t1_t2(train_loss, vl, jnp.float32(0.3), jnp.float32(0.5), inner_lr=0.1)
  b = estimators.t1_t2(train_loss, val_loss, jnp.float32(0.3), jnp.float32(0.5), inner_lr=0.1)
  np.testing.assert_allclose(a - b, 3.0, rtol=1e-5)


class T1T2VariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_pytree_hparams(self):
    params = {"w": jnp.linspace(-1, 1, 4)}
    hparams = {"decay": jnp.array(0.2)}
    tl = lambda p, h: jnp.sum((p["w"] - 1.0) ** 2 + h["decay"] * p["w"] ** 2)
    vl = lambda p, h: jnp.sum((p["w"] - 0.5) ** 2)
    out = self.variant(lambda h: estimators.t1_t2(tl, vl, params, h, None, inner_lr=0.1))(hparams)
    w = np.linspace(-1, 1, 4)
    w_new = w - 0.1 * (2 * (w - 1) + 2 * 0.2 * w)
    np.testing.assert_allclose(out["decay"], np.sum(2 * (w_new - 0.5) * (-0.2 * w)), rtol=1e-5)


def test_bad_inner_lr():
  with pytest.raises(ValueError, match="inner_lr"):
    estimators.t1_t2(train_loss, val_loss, jnp.float32(0.3), jnp.float32(0.5), inner_lr=0.0)
