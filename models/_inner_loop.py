"""The inner loop of optimisation-based meta-learning, as one pure function.

``meta_loss(meta_params) = query_loss(adapt(support_loss, ...))`` written once
can be differentiated by any estimator of ``metagrad.estimators``: reverse
mode stores the whole trajectory (memory grows with ``steps``; with
``checkpoint_every`` only every k-th state), while ``forward_mode``,
``es``/``es_wsr`` and ``finite_difference`` only run it forward (``lax.scan``
keeps one step alive at a time).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from metagrad import _autodiff, _checks

Params = Any


class UpdateRule(NamedTuple):
  """A (possibly learned) inner-loop update rule; all functions are pure.

  Attributes:
    init: ``(key, params) -> rule_params``, the rule's meta-parameters
      (empty for plain SGD), initialised as the rule's paper says.
    init_state: ``(rule_params, params) -> state``, the per-task inner state
      at step 0 (EMA history, previous gates, the adapted optimizer, ...).
    update: ``(rule_params, state, params, grads, *, loss, step, loss_fn)
      -> (params, state)``, one inner step. The extras come as keywords
      (optax's ``**extra_args`` pattern), so a rule names only what it reads
      and takes the rest as ``**_``: ``loss`` is the support loss at
      ``params``, ``step`` the step index, ``loss_fn`` the support loss itself,
      for rules that adapt themselves on it (KLin/KFC, eq. 4); such rules take
      its derivatives with ``support_gradient`` so that ``first_order``
      and ``mixed_mode`` reach them too.

  Examples:
    A rule of your own: SGD with heavy-ball momentum and a meta-learned rate.

    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> tree = jax.tree_util.tree_map
    >>> def update(rule_params, velocity, params, grads, **_):
    ...   velocity = tree(lambda v, g: 0.9 * v + g, velocity, grads)
    ...   return tree(lambda p, v: p - rule_params["lr"] * v, params, velocity), velocity
    >>> momentum = models.UpdateRule(
    ...     init=lambda key, params: {"lr": jnp.array(0.1)},
    ...     init_state=lambda rule_params, params: tree(jnp.zeros_like, params),
    ...     update=update)
    >>> loss_fn = lambda w: jnp.sum((w - 3.0) ** 2)
    >>> result = models.adapt(loss_fn, jnp.zeros(2), momentum, {"lr": jnp.array(0.1)}, steps=3)
    >>> [round(w, 3) for w in result.params.tolist()]       # 0.6, 1.62, 2.814 by hand
    [2.814, 2.814]
  """
  init: Callable[[jax.Array, Params], Params]
  init_state: Callable[[Params, Params], Any]
  update: Callable[..., tuple[Params, Any]]


class AdaptResult(NamedTuple):
  """What ``adapt`` returns.

  Attributes:
    params: ``theta_T``, the task-adapted parameters (shaped like ``theta_0``).
    inner_losses: ``[steps]``, the support loss at ``theta_0 .. theta_{T-1}``.
    state: the rule's inner state after the last step.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import models
    >>> result = models.adapt(lambda w: jnp.sum(w ** 2), jnp.ones(2), models.sgd(0.25), {},
    ...                       steps=2)
    >>> result.params.tolist(), result.inner_losses.tolist()
    ([0.25, 0.25], [2.0, 0.5])
  """
  params: Params
  inner_losses: jax.Array
  state: Any


class _SupportLoss:
  """The support loss as rules see it, carrying how ``adapt`` differentiates:
  under ``first_order`` derivatives a rule takes of it
  (``support_gradient``) are constants to the meta-gradient; under
  ``mixed_mode`` their own derivatives are taken forward-over-reverse."""

  def __init__(self, fn, first_order: bool, mixed_mode: bool):
    self.fn = fn
    self.first_order = first_order
    self.mixed_mode = mixed_mode

  def __call__(self, params):
    return self.fn(params)


def support_gradient(fn: Callable[[Any], jax.Array], x: Any, loss_fn: Callable) -> Any:
  """``jax.grad(fn)(x)`` for a rule that differentiates (a function of) the
  support loss ``loss_fn``; under ``adapt(..., first_order=True)`` the result
  is ``stop_gradient``-ed, like the inner gradients and losses, and under
  ``adapt(..., mixed_mode=True)`` its derivative is forward-over-reverse, like
  theirs."""
  if getattr(loss_fn, "first_order", False):
    return jax.lax.stop_gradient(jax.grad(fn)(x))
  if getattr(loss_fn, "mixed_mode", False):
    return _autodiff.mixed_value_and_grad(fn)(x)[1]
  return jax.grad(fn)(x)


def _check_rule(rule: Any) -> None:
  if not isinstance(rule, UpdateRule):
    raise ValueError(f"`rule` must be an UpdateRule (models.sgd(...), models.meta_sgd(...), "
                     f"...), got {type(rule).__name__}.")


def adapt(loss_fn: Callable[[Params], jax.Array], params: Params, rule: UpdateRule,
          rule_params: Params, *, steps: int, first_order: bool = False,
          checkpoint_every: int | None = None, mixed_mode: bool = False) -> AdaptResult:
  """Runs ``steps`` updates ``theta_{t+1} = rule(theta_t, grad L(theta_t))``.

  Args:
    loss_fn: the task's support loss, ``params -> scalar``.
    params: the initial parameters theta_0 (MAML's meta-learned init),
      floating-point leaves.
    rule: an ``UpdateRule`` (``sgd``, ``meta_sgd``, ``klin``, ``turtle``...).
    rule_params: the rule's meta-parameters (from ``rule.init``).
    steps: T >= 0, the number of inner updates (a static int).
    first_order: the first-order assumption of FO-MAML and of the
      meta-learner LSTM (Ravi & Larochelle 2017; "Stateless Neural
      Meta-Learning using Second-Order Gradients" (TURTLE) section 3.3.2):
      every quantity the rule reads that is computed from the support loss --
      the gradient, the loss value, and any derivative the rule takes of
      ``loss_fn`` itself -- is treated as independent of the meta-parameters
      (``stop_gradient``). The meta-gradient then ignores the Hessian terms of
      the trajectory.
    checkpoint_every: ``None`` (default) stores every inner state for reverse
      mode; ``k`` stores only every k-th and recomputes the k steps between
      (``jax.checkpoint``) when differentiating: O(T/k + k) states instead of
      O(T), for about one extra forward pass. ``k ~ sqrt(T)`` minimises memory.
      Values and gradients are unchanged (up to float rounding).
    mixed_mode: ``False`` (default) lets reverse mode differentiate each inner
      gradient ``g_t = grad L(theta_t)`` the usual way (reverse-over-reverse),
      storing the residuals of its forward *and* backward pass for every
      step. ``True`` computes the meta-gradient's pull-back through each
      ``g_t`` by forward-over-reverse (MixFlow-MG, Kemaev et al. 2025,
      Algorithm 2): ``v -> H_t v`` by one ``jax.jvp`` of ``jax.grad`` (the
      Hessian is symmetric), so each step keeps only its input ``theta_t``
      and recomputes the rest; with ``checkpoint_every`` only every k-th
      state is kept. The meta-gradient is the same (up to float rounding);
      compiled memory per step drops to about one parameter vector plus
      what the rule itself keeps (its own network's activations for
      learned rules). Derivatives a rule takes of the support loss through
      ``support_gradient`` are treated alike (all of metagrad's rules
      do); a rule of your own that calls ``jax.grad`` on ``loss_fn`` directly
      keeps plain reverse-over-reverse for that derivative. Estimators that push
      tangents instead (``forward_mode``, ``forward_gradient``, the
      Hessian-vector products of ``implicit``/``imaml``) get the plain
      gradient (a custom VJP has no JVP; same values); ES and finite
      differences only evaluate. With ``first_order=True`` there is no
      second-order term left and it changes nothing. A ``jax.jvp`` of your
      own through a ``mixed_mode`` objective raises JAX's "can't apply
      forward-mode autodiff (jvp) to a custom_vjp function": use
      ``mixed_mode=False`` there. The choice is made when the objective is
      traced, so an objective you ``jax.jit`` yourself and hand to both kinds
      of estimator keeps its first trace's choice.

  Inside ``shard_map``, ``params`` replicated over an axis that the support
  loss varies over (each device's own tasks) are cast to vary over it first:
  ``jax.grad`` of a device-varying loss with respect to a replicated value is
  the sum over devices, which would adapt every task on all devices'
  gradients. The meta-gradient with respect to replicated ``params`` is then
  the sum of the devices' meta-gradients, as for any replicated input.

  Returns:
    ``AdaptResult`` with theta_T and the per-step inner losses.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import models
    >>> support = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
    >>> out = models.adapt(support, {"w": jnp.zeros(2)}, models.sgd(0.25), {}, steps=3)
    >>> out.params["w"].tolist()          # halves the distance to 3 each step
    [2.625, 2.625]

  References:
    Kemaev, Calian, Zintgraf, Farquhar & van Hasselt (2025), "Scalable
    Meta-Learning via Mixed-Mode Differentiation" (MixFlow-MG),
    arXiv:2505.00793 (``mixed_mode``). Chen, Xu, Zhang & Guestrin (2016),
    "Training Deep Nets with Sublinear Memory Cost", arXiv:1604.06174
    (``checkpoint_every``).
  """
  steps = _checks.integer("steps", steps, minimum=0)
  first_order = _checks.boolean("first_order", first_order)
  _check_rule(rule)
  _checks.float_pytree("params", params)
  support = _checks.scalar_loss("loss_fn", loss_fn, params)
  if checkpoint_every is not None:
    checkpoint_every = _checks.integer("checkpoint_every", checkpoint_every, minimum=1)
  # With first_order there are no second-order terms left to compute.
  mixed_mode = _checks.boolean("mixed_mode", mixed_mode) and not first_order
  rule_loss = _SupportLoss(support, first_order, mixed_mode)
  value_and_grad = (_autodiff.mixed_value_and_grad(support) if mixed_mode
                    else jax.value_and_grad(support))

  def step(carry, t):
    theta, state = carry
    loss, grads = value_and_grad(theta)
    if first_order:
      loss, grads = jax.lax.stop_gradient((loss, grads))
    theta, state = rule.update(rule_params, state, theta, grads, loss=loss, step=t,
                               loss_fn=rule_loss)
    return (theta, state), loss

  # Inside shard_map, replicated theta_0 (and rule state) would otherwise get
  # inner gradients summed over the devices' tasks (see varying_like).
  loss_type = jax.eval_shape(support, params)
  params = _autodiff.varying_like(params, loss_type)
  state = _autodiff.varying_like(rule.init_state(rule_params, params), loss_type)
  carry = (params, state)
  if checkpoint_every is None or checkpoint_every >= steps:
    carry, losses = jax.lax.scan(step, carry, jnp.arange(steps))
  else:
    # Segments of k steps; only the carry entering each segment is stored for
    # the backward pass, the steps inside are recomputed (jax.checkpoint).
    k = checkpoint_every
    full, rest = divmod(steps, k)

    @jax.checkpoint
    def segment(carry, ts):
      return jax.lax.scan(step, carry, ts)

    carry, losses = jax.lax.scan(segment, carry, jnp.arange(full * k).reshape(full, k))
    losses = losses.reshape(-1)
    if rest:
      carry, tail = segment(carry, jnp.arange(full * k, steps))
      losses = jnp.concatenate([losses, tail])
  theta, state = carry
  return AdaptResult(theta, losses, state)


def _no_state(rule_params, params):
  del rule_params, params
  return ()


def sgd(lr: float) -> UpdateRule:
  """MAML's inner rule ``theta <- theta - lr * g`` with a fixed learning rate.

  Args:
    lr: the adaptation learning rate (a positive number; may be traced).

  Returns:
    An ``UpdateRule`` with no meta-parameters and no state.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import models
    >>> out = models.adapt(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(2)}, models.sgd(0.25),
    ...                    {}, steps=1)
    >>> out.params["w"].tolist()                   # w - 0.25 * 2 w
    [0.5, 0.5]

  References:
    Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
    Adaptation of Deep Networks", arXiv:1703.03400.
  """
  _checks.positive("lr", lr)

  def update(rule_params, state, params, grads, **_):
    del rule_params
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), state
  return UpdateRule(lambda key, params: {}, _no_state, update)


def meta_sgd(init_lr: float) -> UpdateRule:
  """Meta-SGD (Li et al. 2017, "Meta-SGD: Learning to Learn Quickly for
  Few-Shot Learning", arXiv:1707.09835): ``theta <- theta - alpha (.) g`` with
  a learned per-parameter learning rate ``alpha``, initialised to ``init_lr``.

  Args:
    init_lr: initial value of every entry of ``alpha`` (a positive number).

  Returns:
    An ``UpdateRule`` whose meta-parameters are ``alpha``, shaped like ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> rule = models.meta_sgd(0.25)
    >>> lrs = rule.init(jax.random.PRNGKey(0), {"w": jnp.ones(2)})      # one rate per entry
    >>> models.adapt(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(2)}, rule, lrs,
    ...              steps=1).params["w"].tolist()
    [0.5, 0.5]

  References:
    Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for
    Few-Shot Learning", arXiv:1707.09835.
  """
  _checks.positive("init_lr", init_lr)

  def init(key, params):
    del key
    return {"lr": jax.tree_util.tree_map(lambda p: jnp.full_like(p, init_lr), params)}

  def update(rule_params, state, params, grads, **_):
    if not isinstance(rule_params, dict) or "lr" not in rule_params:
      raise ValueError("meta_sgd's `rule_params` must be what its `init` returns "
                       "({'lr': per-parameter learning rates}), got "
                       f"{jax.tree_util.tree_structure(rule_params)}.")
    new = jax.tree_util.tree_map(lambda p, a, g: p - a * g, params, rule_params["lr"], grads)
    return new, state
  return UpdateRule(init, _no_state, update)
