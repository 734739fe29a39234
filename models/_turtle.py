"""TURTLE: a stateless feed-forward meta-network as the inner update rule.

Huisman, Plaat & van Rijn, "Stateless Neural Meta-Learning using Second-Order
Gradients" (Machine Learning, 2022; arXiv:2104.10527), section 3.4.3: per base-learner parameter,
an input row ``I_t`` (raw gradient; optionally the loss, an EMA history of
eq. 3.6 and the time step) goes through a shared fully-connected network
``g_phi`` (5 hidden layers of 20 ReLU units by default), and

    theta_{t+1} = theta_t + alpha (.) g_phi(I_t)                 (eq. 3.7)
    h_{t+1}     = beta h_t + (1 - beta) v_t                      (eq. 3.6)

with a learned per-parameter learning-rate vector ``alpha`` and ``v_t`` the
gradient (``"ema_gradient"``) or the update (``"ema_update"``), ``h_0 = 0``.
"""

from __future__ import annotations

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from metagrad import _checks

from ._inner_loop import UpdateRule

INPUTS = ("gradient", "loss", "ema_gradient", "ema_update", "time")


def turtle(*, hidden: Sequence[int] = (20,) * 5, inputs: Sequence[str] = ("gradient",),
           beta: float = 0.9, init_alpha: float = 1.0, num_steps: int | None = None) -> UpdateRule:
  """Builds TURTLE's update rule.

  Args:
    hidden: hidden layer widths of ``g_phi`` (paper default 5 x 20, ReLU).
    inputs: per-parameter input features, from ``INPUTS``; ``"gradient"`` is
      the paper's best setting (section 3.5.1).
    beta: EMA constant of eq. 3.6 (for the ``ema_*`` inputs).
    init_alpha: initial value of every entry of ``alpha`` (the paper's
      hyperparameter study fixes alpha = 1).
    num_steps: T, to scale the ``"time"`` input to ``t / T`` (required with it).

  Returns:
    An ``UpdateRule`` whose meta-parameters are the update network's weights
    (``net``) and the per-parameter step sizes ``alpha``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> net = models.mlp(hidden=(8,))
    >>> theta = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))
    >>> x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    >>> support = lambda p: jnp.mean((net.apply(p, x) - jnp.sin(x)) ** 2)
    >>> rule = models.turtle(hidden=(4, 4))
    >>> out = models.adapt(support, theta, rule, rule.init(jax.random.PRNGKey(1), theta), steps=2)
    >>> jax.tree_util.tree_structure(out.params) == jax.tree_util.tree_structure(theta)
    True

  References:
    Huisman, Plaat & van Rijn 2022, "Stateless Neural Meta-Learning using
    Second-Order Gradients", arXiv:2104.10527.
  """
  if isinstance(inputs, str):
    raise ValueError(f"`inputs` must be a sequence of names from {INPUTS}, got the string "
                     f"{inputs!r} (write ({inputs!r},)).")
  inputs = tuple(inputs)
  bad = [i for i in inputs if i not in INPUTS]
  if bad or not inputs:
    raise ValueError(f"`inputs` must be a non-empty subset of {INPUTS}, got {inputs}.")
  uses_ema = "ema_gradient" in inputs or "ema_update" in inputs
  if "ema_gradient" in inputs and "ema_update" in inputs:
    raise ValueError("`inputs` may hold one of 'ema_gradient' and 'ema_update', not both.")
  _checks.number("beta", beta, minimum=0.0, maximum=1.0)
  _checks.number("init_alpha", init_alpha)
  hidden = tuple(_checks.count("hidden", h) for h in hidden)
  if "time" in inputs:
    if num_steps is None:
      raise ValueError("`num_steps` is required with the 'time' input: the step t is fed as "
                       "t / num_steps (unscaled, it would grow without bound).")
    num_steps = _checks.count("num_steps", num_steps)
  net = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP([*hidden, 1], activation=jax.nn.relu, name="g_phi")(x)[:, 0]))

  def features(flat_grad, loss, history, step):
    cols = []
    for name in inputs:
      if name == "gradient":
        cols.append(flat_grad)
      elif name == "loss":
        cols.append(jnp.full_like(flat_grad, loss))
      elif name == "time":
        cols.append(jnp.full_like(flat_grad, step / num_steps))
      else:
        cols.append(history)
    return jnp.stack(cols, axis=1)                              # [n, d]

  def init(key, params):
    flat, _ = ravel_pytree(params)
    return {"net": net.init(key, jnp.zeros((1, len(inputs)), flat.dtype)),
            "alpha": jax.tree_util.tree_map(lambda p: jnp.full_like(p, init_alpha), params)}

  def init_state(rule_params, params):
    del rule_params
    return jnp.zeros_like(ravel_pytree(params)[0]) if uses_ema else ()

  def update(rule_params, history, params, grads, *, loss, step, **_):
    theta, unravel = ravel_pytree(params)
    flat_grad = ravel_pytree(grads)[0]
    out = net.apply(rule_params["net"], features(flat_grad, loss, history, step))
    delta = ravel_pytree(rule_params["alpha"])[0] * out
    if uses_ema:
      v = flat_grad if "ema_gradient" in inputs else delta
      history = beta * history + (1.0 - beta) * v
    return unravel(theta + delta), history

  return UpdateRule(init, init_state, update)
