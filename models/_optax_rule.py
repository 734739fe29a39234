"""Any optax optimizer as a differentiable inner-loop update rule."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metagrad import _checks

from ._inner_loop import UpdateRule


def _check_optimizer(optimizer: Any) -> None:
  if not (callable(getattr(optimizer, "init", None))
          and callable(getattr(optimizer, "update", None))):
    raise ValueError("`optimizer` must be an optax.GradientTransformation (optax.adam(1e-3), "
                     f"optax.chain(...), ...), got {type(optimizer).__name__}.")


def _check_learnable(learnable: Any) -> tuple[str, ...]:
  if isinstance(learnable, str):
    learnable = (learnable,)
  try:
    learnable = tuple(learnable)
  except TypeError:
    learnable = (learnable,)
  if not all(isinstance(name, str) for name in learnable) or len(set(learnable)) != len(learnable):
    raise ValueError("`learnable` must be distinct names of hyperparameters injected with "
                     f"optax.inject_hyperparams, got {learnable!r}.")
  return learnable


def _hyperparameter(state: Any, name: str) -> jax.Array:
  missing = object()
  try:
    value = optax.tree.get(state, name, default=missing)
    problem = "not" if value is missing else None
  except (KeyError, ValueError):
    problem = "more than once"
  if problem:
    raise ValueError(
        f"`learnable` names {name!r}, which is {problem} a hyperparameter in the optimizer's "
        f"state: build the optimizer with optax.inject_hyperparams, e.g. "
        f"optax.inject_hyperparams(optax.adam)(learning_rate=1e-3) for "
        f"learnable=('learning_rate',).")
  if not jnp.issubdtype(jnp.result_type(value), jnp.inexact):
    raise ValueError(f"`learnable` hyperparameter {name!r} must be a floating value to be "
                     f"meta-learned, got {jnp.result_type(value)}.")
  return value


def _check_differentiable_at_zero_gradient(optimizer, params) -> None:
  """Evaluates (at trace time, on zeros shaped like ``params``) the derivative
  of one update with respect to a gradient that is exactly zero; optimizers
  that divide by the square root of a second moment (adam, rmsprop, adagrad,
  ...) have an infinite one there unless ``eps_root > 0`` (optax#882), and
  0 x inf turns the whole meta-gradient into NaN."""
  with jax.ensure_compile_time_eval():
    zeros = jax.tree_util.tree_map(lambda p: jnp.asarray(np.zeros(p.shape, p.dtype)), params)
    square = lambda p: 0.5 * sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                                 for x in jax.tree_util.tree_leaves(p))

    def total_update(grads):
      state = optimizer.init(zeros)
      updates, _ = optimizer.update(grads, state, zeros, value=square(zeros), grad=grads,
                                    value_fn=square)
      return sum(jnp.sum(u.astype(jnp.float32)) for u in jax.tree_util.tree_leaves(updates))

    try:
      # One compiled program rather than one per eager op.
      slope = jax.jit(jax.grad(total_update))(zeros)
    except Exception:   # noqa: BLE001 - e.g. a line search's while_loop: not ours to judge
      return
    finite = all(bool(jnp.all(jnp.isfinite(s))) for s in jax.tree_util.tree_leaves(slope))
  if not finite:
    raise ValueError(
        "`optimizer`'s update has a non-finite derivative at a zero gradient (a square root "
        "of a zero second moment), so the meta-gradient through it would be NaN wherever an "
        "inner gradient is exactly zero (a frozen parameter, a dead ReLU). Build it with "
        "eps_root > 0, e.g. optax.adam(1e-3, eps_root=1e-8), or differentiate first-order "
        "(adapt(..., first_order=True)).")


def optax_rule(optimizer: optax.GradientTransformation, *, learnable: Sequence[str] = (),
               stop_state_gradient: bool = False) -> UpdateRule:
  """An ``UpdateRule`` running any optax optimizer, differentiable end to end.

  Each inner step is ``updates, s_{t+1} = optimizer.update(g_t, s_t, theta_t,
  value=L(theta_t), grad=g_t, value_fn=L)`` and ``theta_{t+1} = theta_t +
  updates``: the inner state is the optimizer's state, so reverse mode
  (plain, checkpointed or ``mixed_mode``), ``forward_mode``, ES and finite
  differences all differentiate through the optimizer -- its moments, its
  hyperparameters, its own arithmetic -- as through MAML's SGD step.

  ``learnable`` names hyperparameters injected with
  ``optax.inject_hyperparams`` (anywhere in a chain); they become the rule's
  meta-parameters: ``rule.init`` returns ``{name: initial value}``, every step
  writes ``rule_params[name]`` into the optimizer's state before updating,
  and the meta-gradient reaches them (meta-learned learning rates, momenta,
  weight decays).

  **NaN-safety.** The derivative of ``sqrt(nu)`` at ``nu = 0`` is infinite:
  differentiating through ``optax.adam`` where an inner gradient is exactly
  zero gives NaN (optax#882). The rule checks once, when the inner loop is
  traced, that one update has a finite derivative at a zero gradient, and
  raises ``ValueError`` naming ``optimizer`` otherwise: build such optimizers
  with ``eps_root > 0`` (``optax.adam(lr, eps_root=1e-8)``). Not checked under
  ``first_order``, which does not differentiate the update's gradient input.

  **First order.** Under ``adapt(..., first_order=True)`` the optimizer state
  is a constant to the meta-gradient too (as the gradients and losses are);
  ``stop_state_gradient=True`` stops gradients through the state only and
  keeps the second-order terms of the gradients (higher#53's request).

  Optimizers that need the loss (line searches: ``value``, ``grad``,
  ``value_fn``; L-BFGS with its zoom line search) get them from ``adapt``.
  Line searches run a ``lax.while_loop``, which reverse mode cannot
  differentiate: use them where the inner loop is not reverse-differentiated
  (iMAML's implicit gradient, ES, finite differences).

  Args:
    optimizer: an ``optax.GradientTransformation`` (a chain, an
      ``inject_hyperparams(...)(...)``, a line search, L-BFGS, ...).
    learnable: names of injected hyperparameters to meta-learn (each must
      occur once in the optimizer's state and be floating).
    stop_state_gradient: treat the optimizer state (moments, traces) as a
      constant to the meta-gradient, keeping the gradients' second-order terms.

  Returns:
    An ``UpdateRule`` for ``adapt``; ``init(key, params)`` returns
    the learnable hyperparameters' initial values (``{}`` when none).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from metagrad import models
    >>> support = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> rule = models.optax_rule(
    ...     optax.inject_hyperparams(optax.adam)(learning_rate=0.1, eps_root=1e-8),
    ...     learnable=("learning_rate",))
    >>> theta = {"w": jnp.zeros(3)}
    >>> rule_params = rule.init(jax.random.PRNGKey(0), theta)
    >>> meta_loss = lambda m: jnp.sum(models.adapt(
    ...     support, m["theta"], rule, m["rule"], steps=5).params["w"] ** 2)
    >>> grads = jax.grad(meta_loss)({"theta": theta, "rule": rule_params})
    >>> sorted(grads["rule"]), bool(jnp.isfinite(grads["rule"]["learning_rate"]))
    (['learning_rate'], True)

  References:
    Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization",
    arXiv:1412.6980. Grefenstette, Amos, Yarats, Htut, Molchanov, Meier,
    Kiela, Cho & Chintala (2019), "Generalized Inner Loop Meta-Learning"
    (higher), arXiv:1910.01727. Ren, Feng, Liu, Liu, Xiong, Li, Xu, Yang &
    Zhu (2022), "TorchOpt: An Efficient Library for Differentiable
    Optimization", arXiv:2211.06934.
  """
  _check_optimizer(optimizer)
  learnable = _check_learnable(learnable)
  stop_state_gradient = _checks.boolean("stop_state_gradient", stop_state_gradient)
  optimizer = optax.with_extra_args_support(optimizer)

  def init(key, params):
    del key
    state = optimizer.init(params)
    return {name: _hyperparameter(state, name) for name in learnable}

  def with_hyperparameters(state, rule_params):
    if not learnable:
      return state
    if not isinstance(rule_params, dict) or set(rule_params) != set(learnable):
      raise ValueError(f"optax_rule's `rule_params` must be what its `init` returns (a dict of "
                       f"{list(learnable)}), got {jax.tree_util.tree_structure(rule_params)}.")
    for name in learnable:
      _hyperparameter(state, name)
    return optax.tree.set(state, **rule_params)

  def init_state(rule_params, params):
    return with_hyperparameters(optimizer.init(params), rule_params)

  checked = set()    # parameter signatures whose zero-gradient derivative was checked

  def update(rule_params, state, params, grads, *, loss, loss_fn, **_):
    first_order = getattr(loss_fn, "first_order", False)
    signature = (jax.tree_util.tree_structure(params),
                 tuple((p.shape, str(p.dtype)) for p in jax.tree_util.tree_leaves(params)))
    if not first_order and signature not in checked:
      _check_differentiable_at_zero_gradient(optimizer, params)
      checked.add(signature)
    state = with_hyperparameters(state, rule_params)
    updates, state = optimizer.update(grads, state, params, value=loss, grad=grads,
                                      value_fn=loss_fn)
    if first_order or stop_state_gradient:
      state = jax.lax.stop_gradient(state)
    return optax.apply_updates(params, updates), state

  return UpdateRule(init, init_state, update)
