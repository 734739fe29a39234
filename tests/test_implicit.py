"""Implicit-function-theorem hypergradients and iMAML."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators, models

jax.config.update("jax_enable_x64", False)


class QuadraticBilevel:
  """train(theta, lam) = 1/2 theta^T A theta - theta^T B lam  (theta* = A^-1 B lam)
  val(theta, lam)   = 1/2 ||theta - c||^2 + 1/2 lam^T D lam
  hypergradient     = D lam + B^T A^-1 (theta* - c)  (closed form)."""

  def __init__(self, n=6, m=3, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(n, n))
    self.a = jnp.asarray(g @ g.T / n + 0.5 * np.eye(n), jnp.float32)
    self.b = jnp.asarray(rng.normal(size=(n, m)), jnp.float32)
    self.c = jnp.asarray(rng.normal(size=n), jnp.float32)
    self.d = jnp.asarray(np.diag(rng.uniform(0.5, 1.5, m)), jnp.float32)
    self.lam = {"h": jnp.asarray(rng.normal(size=m), jnp.float32)}

  def train(self, p, h):
    return 0.5 * p["t"] @ self.a @ p["t"] - p["t"] @ self.b @ h["h"]

  def val(self, p, h):
    return 0.5 * jnp.sum((p["t"] - self.c) ** 2) + 0.5 * h["h"] @ self.d @ h["h"]

  def solution(self):
    return {"t": jnp.linalg.solve(self.a, self.b @ self.lam["h"])}

  def truth(self):
    theta = self.solution()["t"]
    return self.d @ self.lam["h"] + self.b.T @ jnp.linalg.solve(self.a, theta - self.c)


@pytest.mark.parametrize("solver,kwargs", [("cg", {}), ("neumann", {"num_iterations": 400,
                                                                     "neumann_step": 0.3})])
def test_equals_closed_form_on_quadratic(solver, kwargs):
  q = QuadraticBilevel()
  out = estimators.implicit(q.train, q.val, q.solution(), q.lam, solver=solver, **kwargs)
  np.testing.assert_allclose(out["h"], q.truth(), rtol=1e-4, atol=1e-5)


def test_agrees_with_backprop_through_a_long_converged_inner_loop():
  # Ridge regression: the hyperparameter is the log regularisation strength.
  rng = np.random.default_rng(1)
  x, y = jnp.asarray(rng.normal(size=(40, 5)), jnp.float32), jnp.asarray(rng.normal(size=40), jnp.float32)
  xv, yv = jnp.asarray(rng.normal(size=(30, 5)), jnp.float32), jnp.asarray(rng.normal(size=30), jnp.float32)
  train = lambda p, h: jnp.mean((x @ p["w"] - y) ** 2) + jnp.exp(h["log_reg"]) * jnp.sum(p["w"] ** 2)
  val = lambda p, h: jnp.mean((xv @ p["w"] - yv) ** 2)
  lam = {"log_reg": jnp.asarray(-1.0)}
  w0 = {"w": jnp.zeros(5)}

  def unrolled(h):
    rule = models.sgd(0.1)
    return models.adapt(lambda p: train(p, h), w0, rule, {}, steps=600).params

  backprop = jax.grad(lambda h: val(unrolled(h), h))(lam)
  out = estimators.implicit(train, val, unrolled(lam), lam, num_iterations=50)
  np.testing.assert_allclose(out["log_reg"], backprop["log_reg"], rtol=1e-3)


def test_cg_and_neumann_agree_as_iterations_grow():
  q = QuadraticBilevel(n=10, seed=3)
  cg = estimators.implicit(q.train, q.val, q.solution(), q.lam, solver="cg", num_iterations=50)
  errors = []
  for iterations in (5, 20, 80, 320):
    nm = estimators.implicit(q.train, q.val, q.solution(), q.lam, solver="neumann",
                             num_iterations=iterations, neumann_step=0.3)
    errors.append(float(jnp.linalg.norm(nm["h"] - cg["h"])))
  scale = float(jnp.linalg.norm(cg["h"]))
  # The gap shrinks geometrically until it reaches float32 rounding.
  assert errors[0] > 10 * errors[1] > 100 * errors[2], errors
  assert max(errors[2:]) < 1e-4 * scale, errors


def test_damping_regularises_the_solve():
  q = QuadraticBilevel()
  plain = estimators.implicit(q.train, q.val, q.solution(), q.lam)
  damped = estimators.implicit(q.train, q.val, q.solution(), q.lam, damping=1e3)
  direct = q.d @ q.lam["h"]            # H + damping I -> the implicit term vanishes
  assert jnp.linalg.norm(damped["h"] - direct) < 0.01 * jnp.linalg.norm(plain["h"] - direct)


def test_imaml_matches_its_closed_form():
  # Quadratic support loss: theta* and (I + H/reg)^-1 g are exact.
  q = QuadraticBilevel(n=5)
  support = lambda t: 0.5 * t["t"] @ q.a @ t["t"] - t["t"] @ q.c
  query = lambda t: 0.5 * jnp.sum((t["t"] - 1.0) ** 2)
  reg = 2.0
  theta0 = {"t": jnp.linspace(-1.0, 1.0, 5)}
  star = {"t": jnp.linalg.solve(q.a + reg * jnp.eye(5), q.c + reg * theta0["t"])}
  out = estimators.imaml(support, query, star, theta0, reg=reg)
  truth = jnp.linalg.solve(jnp.eye(5) + q.a / reg, star["t"] - 1.0)
  np.testing.assert_allclose(out["t"], truth, rtol=1e-4, atol=1e-6)
  # And the inner loop on the proximal objective converges to theta*.
  adapted = models.adapt(estimators.proximal(support, theta0, reg=reg), theta0,
                         models.sgd(0.2), {}, steps=300).params
  chex.assert_trees_all_close(adapted, star, rtol=1e-4, atol=1e-5)


def test_imaml_damping_solves_the_damped_system_and_matches_the_reference_operator():
  # A support Hessian with eigenvalues below -reg (as measured on conv4 Omniglot
  # episodes, README "iMAML vs MAML"): I + H/reg is indefinite there, and
  # damping d makes CG solve reg (H + (reg + d) I)^-1 g instead. With
  # d = reg + 20 this is the iMAML reference code's operator
  # (2 I + H / (reg + 10))^-1 g (aravindr93/imaml_dev, regu_coef = 1,
  # lam_damping = 10) times reg / (reg + 10).
  rng = np.random.default_rng(4)
  basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  eigenvalues = np.array([-1.7, -0.8, 0.3, 2.0, 7.0, 12.0])
  h = jnp.asarray(basis @ np.diag(eigenvalues) @ basis.T, jnp.float32)
  support = lambda t: 0.5 * t["t"] @ h @ t["t"]
  target = jnp.asarray(rng.normal(size=6), jnp.float32)
  query = lambda t: 0.5 * jnp.sum((t["t"] - target) ** 2)
  reg = 0.5
  adapted = {"t": jnp.asarray(rng.normal(size=6), jnp.float32)}
  g = adapted["t"] - target
  for damping in (1.5, reg + 20.0):
    out = estimators.imaml(support, query, adapted, adapted, reg=reg, damping=damping,
                           num_iterations=6)
    truth = reg * jnp.linalg.solve(h + (reg + damping) * jnp.eye(6), g)
    np.testing.assert_allclose(out["t"], truth, rtol=1e-4, atol=1e-6)
  reference = jnp.linalg.solve(2.0 * jnp.eye(6) + h / (reg + 10.0), g)
  np.testing.assert_allclose(out["t"] * (reg + 10.0) / reg, reference, rtol=1e-4, atol=1e-6)


def test_has_aux_and_jit():
  q = QuadraticBilevel()
  val_aux = lambda p, h: (q.val(p, h), {"v": q.val(p, h)})
  out, aux = jax.jit(lambda p, h: estimators.implicit(q.train, val_aux, p, h, has_aux=True))(
      q.solution(), q.lam)
  np.testing.assert_allclose(out["h"], q.truth(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(aux["v"], q.val(q.solution(), q.lam), rtol=1e-6)


@pytest.mark.parametrize("kwargs,arg", [
    (dict(solver="lu"), "solver"), (dict(num_iterations=0), "num_iterations"),
    (dict(damping=-1.0), "damping"), (dict(neumann_step=0.0), "neumann_step"),
    (dict(tol=float("nan")), "tol")])
def test_bad_solver_settings(kwargs, arg):
  q = QuadraticBilevel()
  with pytest.raises(ValueError, match=arg):
    estimators.implicit(q.train, q.val, q.solution(), q.lam, **kwargs)
  with pytest.raises(ValueError, match="reg"):
    estimators.imaml(lambda t: jnp.sum(t["t"]), lambda t: jnp.sum(t["t"]), q.solution(),
                     q.solution(), reg=0.0)


def test_imaml_return_info_flags_a_diverged_inner_loop():
  # A step past 2 / (lambda_max + reg) makes gradient descent on the proximal
  # problem diverge: the ratio grows past 1 and the task is not solved.
  from metagrad import models
  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  y = 2.0 * x[:, 0]
  support = lambda p: jnp.mean((x @ p["w"] - y) ** 2)
  query = lambda p: jnp.mean((x @ p["w"] - y - 0.1) ** 2)
  theta0 = {"w": jnp.zeros(1)}
  inner = estimators.proximal(support, theta0, reg=1.0)
  run = lambda lr: estimators.imaml(
      support, query, models.adapt(inner, theta0, models.sgd(lr), {}, steps=20).params, theta0,
      reg=1.0, return_info=True)
  plain = estimators.imaml(support, query, models.adapt(inner, theta0, models.sgd(0.2), {},
                                                        steps=20).params, theta0, reg=1.0)
  grads, good = run(0.2)
  np.testing.assert_array_equal(grads["w"], plain["w"])      # info changes nothing else
  assert bool(good.solved) and float(good.residual_ratio) < 1e-2
  # Hessian of the proximal objective: 2 mean(x^2) + 1 = 1.86; steps above 2/1.86 diverge.
  _, bad = run(1.5)
  assert not bool(bad.solved) and float(bad.residual_ratio) > 1.0
  # ... and with has_aux, info comes last.
  _, aux, info = estimators.imaml(support, lambda p: (query(p), 7), models.adapt(
      inner, theta0, models.sgd(0.2), {}, steps=20).params, theta0, reg=1.0, has_aux=True,
      return_info=True)
  assert aux == 7 and bool(info.solved)
