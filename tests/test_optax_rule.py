"""models.optax_rule: optax optimizers as differentiable inner loops.

Meta-gradients through the rule equal hand-written inner loops (float64,
1e-10) and central finite differences (1e-4 relative); Adam at a zero inner
gradient gives NaN unguarded and is refused or finite through the rule; the
first-order variants drop exactly what they say.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metagrad import estimators, models

X = np.linspace(-1.0, 1.0, 12).reshape(6, 2)
Y = np.sin(3.0 * X[:, 0]) + X[:, 1] ** 2


def _dtype():
  return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _data():
  return jnp.asarray(X, _dtype()), jnp.asarray(Y, _dtype())


def support(p):
  x, y = _data()
  return jnp.mean((jnp.tanh(x @ p["w"]) @ p["v"] - y) ** 2)


def query(p):
  x, y = _data()
  return jnp.mean((jnp.tanh(x @ p["w"]) @ p["v"] - y - 0.3) ** 2)


def _theta():
  """float64 under jax.enable_x64, float32 otherwise."""
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(2, 4)), _dtype()),
          "v": jnp.asarray(rng.normal(size=4), _dtype())}


def _momentum_by_hand(theta, lr, mu, steps, first_order=False):
  trace = jax.tree_util.tree_map(jnp.zeros_like, theta)
  for _ in range(steps):
    g = jax.grad(support)(theta)
    if first_order:
      g = jax.lax.stop_gradient(g)
    trace = jax.tree_util.tree_map(lambda t, gi: gi + mu * t, trace, g)
    if first_order:
      trace = jax.lax.stop_gradient(trace)
    theta = jax.tree_util.tree_map(lambda p, t: p - lr * t, theta, trace)
  return theta


def _adam_by_hand(theta, lr, steps, b1=0.9, b2=0.999, eps=1e-8, eps_root=1e-8):
  mu = jax.tree_util.tree_map(jnp.zeros_like, theta)
  nu = jax.tree_util.tree_map(jnp.zeros_like, theta)
  for t in range(1, steps + 1):
    g = jax.grad(support)(theta)
    mu = jax.tree_util.tree_map(lambda m, gi: b1 * m + (1 - b1) * gi, mu, g)
    nu = jax.tree_util.tree_map(lambda n, gi: b2 * n + (1 - b2) * gi ** 2, nu, g)
    theta = jax.tree_util.tree_map(
        lambda p, m, n: p - lr * (m / (1 - b1 ** t)) / (jnp.sqrt(n / (1 - b2 ** t) + eps_root)
                                                        + eps), theta, mu, nu)
  return theta


def _through_rule(rule, rule_params, steps, **adapt_kw):
  def meta_loss(meta):
    return query(models.adapt(support, meta["theta"], rule, meta["rule"], steps=steps,
                              **adapt_kw).params)
  return meta_loss


@pytest.mark.parametrize("name", ["sgd_momentum", "adam", "adam_learned_lr"])
def test_meta_gradient_equals_hand_written_loop_and_finite_differences(name):
  with jax.enable_x64(True):
    theta = _theta()
    if name == "sgd_momentum":
      rule, by_hand = models.optax_rule(optax.sgd(0.1, momentum=0.7)), (
          lambda m: query(_momentum_by_hand(m["theta"], 0.1, 0.7, 2)))
    elif name == "adam":
      rule, by_hand = models.optax_rule(optax.adam(0.05, eps_root=1e-8)), (
          lambda m: query(_adam_by_hand(m["theta"], 0.05, 2)))
    else:
      rule = models.optax_rule(optax.inject_hyperparams(optax.adam)(learning_rate=0.05,
                                                                    eps_root=1e-8),
                               learnable=("learning_rate",))
      by_hand = lambda m: query(_adam_by_hand(m["theta"], m["rule"]["learning_rate"], 2))
    meta = {"theta": theta, "rule": rule.init(jax.random.PRNGKey(0), theta)}
    assert meta["theta"]["w"].dtype == jnp.float64
    ours = jax.jit(jax.grad(_through_rule(rule, meta["rule"], 2)))(meta)
    reference = jax.grad(by_hand)(meta)
    chex.assert_trees_all_close(ours, reference, rtol=1e-10, atol=1e-13)
    # Central differences along every coordinate (O(h^2) = 1e-10 at h = 1e-5).
    flat, unravel = jax.flatten_util.ravel_pytree(meta)
    loss = jax.jit(lambda v: _through_rule(rule, None, 2)(unravel(v)))
    h = 1e-5
    fd = np.array([(loss(flat.at[i].add(h)) - loss(flat.at[i].add(-h))) / (2 * h)
                   for i in range(flat.size)])
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(ours)[0], fd, rtol=1e-4,
                               atol=1e-8)
    if name == "adam_learned_lr":
      assert abs(float(ours["rule"]["learning_rate"])) > 1e-3


def blank_support(p):
  # An input feature that is 0 on every support example (a blank pixel): the
  # inner gradient of its weights "blank" is exactly 0, yet (0 x the hidden
  # units' error) a function of theta.
  x, y = _data()
  blank_input = jnp.zeros((x.shape[0], 1), x.dtype)
  hidden = jnp.tanh(x @ p["w"] + blank_input @ p["blank"][None, :])
  return jnp.mean((hidden @ p["v"] - y) ** 2)


def test_adam_at_a_zero_gradient_nan_unguarded_refused_or_finite_through_the_rule():
  theta = {**_theta(), "blank": jnp.ones(4)}
  meta_query = lambda p: query(p) + jnp.sum(p["blank"] ** 2)
  adam = optax.adam(0.05)            # eps_root = 0, optax's default

  def unguarded(t):                  # optax.adam differentiated as is
    state = adam.init(t)
    for _ in range(2):
      updates, state = adam.update(jax.grad(blank_support)(t), state, t)
      t = optax.apply_updates(t, updates)
    return meta_query(t)
  grads = jax.grad(unguarded)(theta)
  assert not np.all(np.isfinite(jax.flatten_util.ravel_pytree(grads)[0]))   # the NaN

  meta = lambda rule: jax.grad(lambda t: meta_query(models.adapt(
      blank_support, t, rule, {}, steps=2).params))(theta)
  with pytest.raises(ValueError, match="`optimizer`.*eps_root"):
    meta(models.optax_rule(adam))
  with pytest.raises(ValueError, match="`optimizer`.*eps_root"):
    jax.jit(lambda: meta(models.optax_rule(adam)))()
  safe = meta(models.optax_rule(optax.adam(0.05, eps_root=1e-8)))
  chex.assert_tree_all_finite(safe)
  np.testing.assert_allclose(safe["blank"], 2.0 * np.ones(4), rtol=1e-5)  # blank stays put
  # first_order does not differentiate the update's gradient input: allowed, finite.
  fo = jax.grad(lambda t: meta_query(models.adapt(
      blank_support, t, models.optax_rule(adam), {}, steps=2, first_order=True).params))(theta)
  chex.assert_tree_all_finite(fo)


def test_first_order_and_stop_state_gradient_semantics():
  with jax.enable_x64(True):
    theta = _theta()
    rule = models.optax_rule(optax.sgd(0.1, momentum=0.7))
    meta = {"theta": theta, "rule": {}}
    first = jax.grad(_through_rule(rule, {}, 3, first_order=True))(meta)["theta"]
    by_hand = jax.grad(lambda t: query(_momentum_by_hand(t, 0.1, 0.7, 3, first_order=True)))(theta)
    chex.assert_trees_all_close(first, by_hand, rtol=1e-10, atol=1e-13)
    # stop_state_gradient keeps the gradients' Hessian terms but not the
    # momentum's: d trace_t / d theta_0 counts only this step's gradient.
    stopped = models.optax_rule(optax.sgd(0.1, momentum=0.7), stop_state_gradient=True)

    def hand_stopped(t):
      trace = jax.tree_util.tree_map(jnp.zeros_like, t)
      for _ in range(3):
        g = jax.grad(support)(t)
        trace = jax.tree_util.tree_map(lambda tr, gi: gi + 0.7 * jax.lax.stop_gradient(tr),
                                       trace, g)
        t = jax.tree_util.tree_map(lambda p, tr: p - 0.1 * tr, t, trace)
      return query(t)
    ours = jax.grad(_through_rule(stopped, {}, 3))(meta)["theta"]
    chex.assert_trees_all_close(ours, jax.grad(hand_stopped)(theta), rtol=1e-10, atol=1e-13)
    full = jax.grad(_through_rule(rule, {}, 3))(meta)["theta"]
    assert not np.allclose(jax.flatten_util.ravel_pytree(ours)[0],
                           jax.flatten_util.ravel_pytree(full)[0], rtol=1e-3)


@pytest.mark.parametrize("estimator", ["forward_mode", "es", "mixed_mode", "checkpointed"])
def test_every_way_of_differentiating_the_rule(estimator):
  theta = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), _theta())
  rule = models.optax_rule(optax.inject_hyperparams(optax.adam)(learning_rate=0.05,
                                                                eps_root=1e-8),
                           learnable=("learning_rate",))
  meta = {"theta": theta, "rule": rule.init(None, theta)}
  exact = jax.jit(jax.grad(_through_rule(rule, None, 3)))(meta)
  if estimator == "forward_mode":
    got = jax.jit(lambda m: estimators.forward_mode(_through_rule(rule, None, 3), m))(meta)
    chex.assert_trees_all_close(got, exact, rtol=1e-4, atol=1e-6)
  elif estimator == "es":
    got = jax.jit(lambda m, k: estimators.es(_through_rule(rule, None, 3), m, k, sigma=1e-3,
                                             population=2000))(meta, jax.random.PRNGKey(0))
    flat = lambda g: jax.flatten_util.ravel_pytree(g)[0]
    cos = flat(got) @ flat(exact) / (jnp.linalg.norm(flat(got)) * jnp.linalg.norm(flat(exact)))
    assert cos > 0.9, cos
  else:
    kw = {"mixed_mode": True} if estimator == "mixed_mode" else {"checkpoint_every": 2}
    got = jax.jit(jax.grad(_through_rule(rule, None, 3, **kw)))(meta)
    chex.assert_trees_all_close(got, exact, rtol=1e-5, atol=1e-7)


def test_line_search_gets_the_loss_from_adapt():
  # A backtracking line search reads value and value_fn: adapt supplies them
  # (the inner loop is then not reverse-differentiable: a while_loop).
  rule = models.optax_rule(optax.chain(optax.sgd(1.0),
                                       optax.scale_by_backtracking_linesearch(max_backtracking_steps=15)))
  theta = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), _theta())
  out = models.adapt(support, theta, rule, rule.init(None, theta), steps=5)
  losses = np.asarray(out.inner_losses)
  assert np.all(np.diff(losses) <= 1e-7), losses            # monotone: the search worked
  assert float(support(out.params)) < 0.5 * losses[0]


@pytest.mark.parametrize("make,match", [
    (lambda: models.optax_rule("adam"), "optimizer"),
    (lambda: models.optax_rule(optax.adam(0.1), learnable=("learning_rate",)).init(
        None, {"w": jnp.ones(2)}), "learnable.*inject_hyperparams"),
    (lambda: models.optax_rule(optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
                               learnable=("lr",)).init(None, {"w": jnp.ones(2)}), "learnable"),
    (lambda: models.optax_rule(optax.adam(0.1), learnable=3), "learnable"),
    (lambda: models.optax_rule(optax.adam(0.1), stop_state_gradient="yes"),
     "stop_state_gradient"),
])
def test_bad_inputs_name_the_argument(make, match):
  with pytest.raises(ValueError, match=match):
    make()
