"""The inner loop of optimisation-based meta-learning, as one pure function.

``meta_loss(meta_params) = query_loss(adapt(support_loss, ...))`` written once
can be differentiated by any estimator of :mod:`metagrad.estimators`: reverse
mode stores the whole trajectory (memory grows with ``steps``), while
``forward_mode``, ``es``/``es_wsr`` and ``finite_difference`` only run it
forward (``lax.scan`` keeps one step alive at a time).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = Any


class UpdateRule(NamedTuple):
  """A (possibly learned) inner-loop update rule; all functions are pure.

  Attributes:
    init: ``(key, params) -> rule_params``, the rule's meta-parameters
      (empty for plain SGD), initialised as the rule's paper says.
    init_state: ``(rule_params, params) -> state``, the per-task inner state
      at step 0 (EMA history, previous gates, the adapted optimizer, ...).
    update: ``(rule_params, state, params, grads, loss, step, loss_fn)
      -> (params, state)``, one inner step; ``loss_fn`` is the support loss,
      for rules that adapt themselves on it (KLin/KFC, eq. 4).
  """
  init: Callable[[jax.Array, Params], Params]
  init_state: Callable[[Params, Params], Any]
  update: Callable[..., tuple[Params, Any]]


class AdaptResult(NamedTuple):
  params: Params            # theta_T, the task-adapted parameters
  inner_losses: jax.Array   # [steps] support loss at theta_0 .. theta_{T-1}
  state: Any                # the rule's final inner state


def adapt(loss_fn: Callable[[Params], jax.Array], params: Params, rule: UpdateRule,
          rule_params: Params, *, steps: int, first_order: bool = False) -> AdaptResult:
  """Runs ``steps`` updates ``theta_{t+1} = rule(theta_t, grad L(theta_t))``.

  Args:
    loss_fn: the task's support loss, ``params -> scalar``.
    params: the initial parameters theta_0 (MAML's meta-learned init).
    rule: an :class:`UpdateRule` (``sgd``, ``meta_sgd``, ``klin``, ``turtle``...).
    rule_params: the rule's meta-parameters (from ``rule.init``).
    steps: T, the number of inner updates (static).
    first_order: stop gradients through the inner gradients (FO-MAML and
      the meta-learner LSTM's first-order assumption): the meta-gradient then
      ignores the Hessian terms of the trajectory.

  Returns:
    :class:`AdaptResult` with theta_T and the per-step inner losses.
  """
  if not isinstance(steps, int) or steps < 0:
    raise ValueError(f"`steps` must be a non-negative int, got {steps!r}.")
  value_and_grad = jax.value_and_grad(loss_fn)

  def step(carry, t):
    theta, state = carry
    loss, grads = value_and_grad(theta)
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    theta, state = rule.update(rule_params, state, theta, grads, loss, t, loss_fn)
    return (theta, state), loss

  state = rule.init_state(rule_params, params)
  (theta, state), losses = jax.lax.scan(step, (params, state), jnp.arange(steps))
  return AdaptResult(theta, losses, state)


def _no_state(rule_params, params):
  del rule_params, params
  return ()


def sgd(lr: float) -> UpdateRule:
  """MAML's inner rule ``theta <- theta - lr * g`` with a fixed learning rate."""
  def update(rule_params, state, params, grads, loss, step, loss_fn):
    del rule_params, loss, step, loss_fn
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), state
  return UpdateRule(lambda key, params: {}, _no_state, update)


def meta_sgd(init_lr: float) -> UpdateRule:
  """Meta-SGD (Li et al. 2017): ``theta <- theta - alpha (.) g`` with a learned
  per-parameter learning rate ``alpha``, initialised to ``init_lr``."""
  def init(key, params):
    del key
    return {"lr": jax.tree_util.tree_map(lambda p: jnp.full_like(p, init_lr), params)}

  def update(rule_params, state, params, grads, loss, step, loss_fn):
    del loss, step, loss_fn
    new = jax.tree_util.tree_map(lambda p, a, g: p - a * g, params, rule_params["lr"], grads)
    return new, state
  return UpdateRule(init, _no_state, update)
