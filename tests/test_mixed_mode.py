"""adapt(mixed_mode=True): forward-over-reverse meta-gradients (MixFlow-MG).

The meta-gradient must be the plain reverse-mode one (float64, 1e-10) for every
update rule, with and without checkpoints; its compiled memory must grow by
about one parameter vector per inner step; and every estimator must still run
on a mixed-mode objective.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from metagrad import estimators, models, tasks

RULES = {
    "sgd": lambda: models.sgd(0.05),
    "meta_sgd": lambda: models.meta_sgd(0.05),
    "meta_curvature": lambda: models.meta_curvature(0.05),
    "klin": lambda: models.klin(0.05),
    "kfc": lambda: models.kfc(0.05),
    "cfc": lambda: models.cfc(0.05),
    "turtle": lambda: models.turtle(hidden=(4, 4), init_alpha=0.05),
    "meta_lstm": lambda: models.meta_lstm(),
    "optax_adam": lambda: models.optax_rule(
        optax.inject_hyperparams(optax.adam)(learning_rate=0.05, eps_root=1e-8),
        learnable=("learning_rate",)),
}
NET = models.mlp(hidden=(8, 8))


def _problem(rule, steps, every):
  """(objective(meta, mixed) -> (query loss, inner losses), meta) on one sine
  task; the support loss carries a meta-learned L2 weight, so derivatives
  also flow to values the loss closes over."""
  task = tasks.sample_sine_task(jax.random.PRNGKey(0), shot=5, query=10)
  params = NET.init(jax.random.PRNGKey(1), task.support_x)
  meta = {"model": params, "rule": rule.init(jax.random.PRNGKey(2), params),
          "l2": jnp.asarray(0.01, params["mlp/~/linear_0"]["w"].dtype)}

  def objective(meta, mixed, first_order=False):
    def support(p):
      mse = jnp.mean((NET.apply(p, task.support_x) - task.support_y) ** 2)
      return mse + meta["l2"] * sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(p))
    out = models.adapt(support, meta["model"], rule, meta["rule"], steps=steps,
                       checkpoint_every=every, mixed_mode=mixed, first_order=first_order)
    query = jnp.mean((NET.apply(out.params, task.query_x) - task.query_y) ** 2)
    return query, out.inner_losses
  return objective, meta


# Every rule over T = 5 steps, and with checkpoints every 2 (the tail segment
# too) a plain, a self-adapting (support_gradient) and a stateful rule; the
# checkpointed Kronecker programs take 10-15 s each to compile.
CASES = [(name, None) for name in RULES] + [("sgd", 2), ("klin", 2), ("meta_lstm", 2)]


@pytest.mark.parametrize("rule_name,every", CASES)
def test_equals_plain_backprop_in_float64(rule_name, every):
  # T = 5 is not a multiple of checkpoint_every = 2: the tail segment too.
  with jax.enable_x64(True):
    objective, meta = _problem(RULES[rule_name](), steps=5, every=every)
    assert meta["model"]["mlp/~/linear_0"]["w"].dtype == jnp.float64
    grad = lambda mixed: jax.jit(jax.value_and_grad(
        lambda m: objective(m, mixed), has_aux=True))(meta)
    (plain, plain_losses), plain_grads = grad(False)
    (mixed, mixed_losses), mixed_grads = grad(True)
    np.testing.assert_allclose(mixed, plain, rtol=1e-12)
    np.testing.assert_allclose(mixed_losses, plain_losses, rtol=1e-12)
    chex.assert_trees_all_close(mixed_grads, plain_grads, rtol=1e-10, atol=1e-14)
    # The meta-parameters the support loss closes over get their share.
    assert abs(float(plain_grads["l2"])) > 1e-6


@pytest.mark.parametrize("rule_name", ["sgd", "klin"])
def test_first_order_is_unchanged_by_mixed_mode(rule_name):
  # No second-order term is left to compute: the same program, the same bits.
  objective, meta = _problem(RULES[rule_name](), steps=3, every=None)
  grad = lambda mixed: jax.jit(jax.grad(lambda m: objective(m, mixed, first_order=True)[0]))
  chex.assert_trees_all_equal(grad(True)(meta), grad(False)(meta))


def test_vmap_and_shard_map_over_tasks():
  # A meta-batch of 4 tasks: vmapped, and split over 2 devices by shard_map.
  task_keys = jax.random.split(jax.random.PRNGKey(5), 4)
  sample = jax.vmap(lambda k: tasks.sample_sine_task(k, shot=5, query=10))(task_keys)
  params = NET.init(jax.random.PRNGKey(1), sample.support_x[0])
  mse = lambda p, x, y: jnp.mean((NET.apply(p, x) - y) ** 2)

  def meta_loss(theta, task, mixed):
    adapted = models.adapt(lambda p: mse(p, task.support_x, task.support_y), theta,
                           models.sgd(0.05), {}, steps=4, mixed_mode=mixed).params
    return mse(adapted, task.query_x, task.query_y)

  def mean_grad(theta, batch, mixed):
    grads = jax.vmap(jax.grad(meta_loss), (None, 0, None))(theta, batch, mixed)
    return jax.tree_util.tree_map(lambda g: g.mean(0), grads)

  plain = jax.jit(functools.partial(mean_grad, mixed=False))(params, sample)
  vmapped = jax.jit(functools.partial(mean_grad, mixed=True))(params, sample)
  chex.assert_trees_all_close(vmapped, plain, rtol=1e-5, atol=1e-7)
  # vmap inside grad (the usual meta-batch): the support data the loss closes
  # over are batch tracers, which must not leak into the backward pass.
  inside = jax.jit(jax.grad(lambda t: jnp.mean(jax.vmap(lambda task: meta_loss(
      t, task, True))(sample))))(params)
  chex.assert_trees_all_close(inside, plain, rtol=1e-5, atol=1e-7)
  # Replicated theta, each device's 2 tasks: each task must adapt on its own
  # support gradient (not on the sum over devices that jax.grad returns for
  # a replicated input), and the meta-gradient of the replicated theta is, as
  # always in shard_map, the sum of the 2 devices' means: 2x the mean.
  mesh = jax.make_mesh((2,), ("tasks",), devices=jax.devices()[:2])
  batch = jax.device_put(sample, NamedSharding(mesh, P("tasks")))
  replicated = jax.device_put(params, NamedSharding(mesh, P()))
  twice = jax.tree_util.tree_map(lambda g: 2 * g, plain)
  for mixed in (False, True):
    sharded = jax.jit(jax.shard_map(functools.partial(mean_grad, mixed=mixed), mesh=mesh,
                                    in_specs=(P(), P("tasks")), out_specs=P()))
    chex.assert_trees_all_close(sharded(replicated, batch), twice, rtol=1e-5, atol=1e-7)


# Every estimator on a mixed-mode objective: tests/test_inner_loop.py
# (test_any_estimator_through_adapt) runs backprop, forward_mode, es, es_wsr
# and finite differences on one, for every rule.


def test_hessian_vector_products_of_a_mixed_mode_objective():
  # jax.jvp of jax.grad (curvature, implicit): the plain inner gradient.
  objective, meta = _problem(models.sgd(0.05), steps=3, every=None)
  run = lambda mixed: estimators.hessian_extreme_eigenvalues(
      lambda m: objective({**meta, "model": m}, mixed)[0], meta["model"],
      jax.random.PRNGKey(0), num_iterations=6)
  a, b = run(True), run(False)
  np.testing.assert_allclose([a.lowest, a.highest], [b.lowest, b.highest], rtol=1e-5)


def test_your_own_jvp_gets_jax_error():
  objective, meta = _problem(models.sgd(0.05), steps=2, every=None)
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(lambda m: objective(m, True)[0], (meta,), (meta,))


def _conv_temp_bytes(steps, mixed, every=None):
  net = models.conv4(channels=4, num_blocks=1, num_classes=3, pooling="global_mean")
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 12, 12, 1))
  y = jnp.array([0, 1, 2, 0, 1, 2])
  params = net.init(jax.random.PRNGKey(1), x)
  ce = lambda p: models.protonet.loss(net.apply(p, x), y)
  meta = lambda p: ce(models.adapt(ce, p, models.sgd(0.1), {}, steps=steps,
                                   checkpoint_every=every, mixed_mode=mixed).params)
  exe = jax.jit(jax.grad(meta)).lower(params).compile()
  param_bytes = sum(v.size * v.dtype.itemsize for v in jax.tree_util.tree_leaves(params))
  return exe.memory_analysis().temp_size_in_bytes, param_bytes


def test_compiled_memory_grows_by_one_parameter_vector_per_step():
  (short, param_bytes), (long, _) = _conv_temp_bytes(16, True), _conv_temp_bytes(80, True)
  per_step = (long - short) / 64
  # theta_t per step (what the scan stacks for the backward pass), no more.
  assert 0.9 * param_bytes <= per_step <= 1.1 * param_bytes, (per_step, param_bytes)
  (plain_short, _), (plain_long, _) = _conv_temp_bytes(16, False), _conv_temp_bytes(80, False)
  assert (plain_long - plain_short) / 64 > 10 * per_step, (plain_short, plain_long, per_step)
  # With checkpoints every 8th state is stored and 8 recomputed: flatter still.
  (ckpt, _) = _conv_temp_bytes(80, True, every=8)
  assert ckpt < long, (ckpt, long)
