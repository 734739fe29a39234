"""The meta-learner LSTM of Ravi & Larochelle (2017, "Optimization as a Model
for Few-Shot Learning", ICLR) as an inner update rule.

Eq. (3.3) of "Stateless Neural Meta-Learning using Second-Order Gradients"
(TURTLE, arXiv:2104.10527): the cell state is the learner's
parameters, ``c_0 = theta``, and per parameter

    f_t = sigmoid(W_f . [grad, L, theta_t, f_{t-1}] + b_f)      (forget gate)
    i_t = sigmoid(W_i . [grad, L, theta_t, i_{t-1}] + b_i)      (learning rate)
    c_{t+1} = f_t (.) c_t - i_t (.) grad

with the gradient and loss preprocessed as in Andrychowicz et al. (2016)
(``x -> (log|x| / p, sign x)`` if ``|x| >= e^-p`` else ``(-1, e^p x)``, p = 10),
so each gate sees 6 inputs. ``W_f, b_f, W_i, b_i`` are shared by all
parameters. Initialisation as in Ravi & Larochelle: ``W ~ U(-0.01, 0.01)``,
``b_f ~ U(4, 6)`` (forget gate near 1: no weight decay), ``b_i ~ U(-5, -4)``
(small learning rates), previous gates 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from metagrad import _checks

from ._inner_loop import UpdateRule

NUM_INPUTS = 6


def preprocess(x: jax.Array, p: float = 10.0) -> jax.Array:
  """Andrychowicz et al. (2016) gradient preprocessing, ``[..., 2]``."""
  big = jnp.abs(x) >= math.exp(-p)
  # The inner where keeps log's gradient finite on the branch that is not taken.
  first = jnp.where(big, jnp.log(jnp.abs(jnp.where(big, x, 1.0))) / p, -1.0)
  second = jnp.where(big, jnp.sign(x), math.exp(p) * x)
  return jnp.stack([first, second], axis=-1)


def gradient_descent_params(lr: float, forget_bias: float = 30.0) -> dict:
  """Theorem 1 of the TURTLE paper: ``W_f = W_i = 0``, large ``b_f`` and
  ``b_i = -ln((1 - lr) / lr)`` make the LSTM plain SGD with ``lr``.

  Args:
    lr: the SGD learning rate the input gate reproduces, in (0, 1).
    forget_bias: b_f, large enough that the forget gate is ~1 (> 0).

  Returns:
    The LSTM gate parameters (a dict) under which ``meta_lstm`` takes plain SGD
    steps of size ``lr``.

  Examples:
    >>> from metagrad import models
    >>> sorted(models.gradient_descent_params(0.1))[:2]
    ['b_f', 'b_i']

  References:
    Huisman, Plaat & van Rijn 2022, "Stateless Neural Meta-Learning using
    Second-Order Gradients", arXiv:2104.10527.
  """
  _checks.number("lr", lr, minimum=0.0, maximum=1.0, exclusive=True)
  _checks.positive("forget_bias", forget_bias)
  return {"w_f": jnp.zeros(NUM_INPUTS), "b_f": jnp.asarray(forget_bias),
          "w_i": jnp.zeros(NUM_INPUTS), "b_i": jnp.asarray(-math.log((1.0 - lr) / lr))}


def meta_lstm(*, preprocess_p: float = 10.0) -> UpdateRule:
  """Builds the meta-learner LSTM update rule (eq. 3.3).

  Args:
    preprocess_p: p of the gradient/loss preprocessing (> 0; 10 in the paper).

  Returns:
    An ``UpdateRule`` whose meta-parameters are the forget and input gates' weights
    and biases (``w_f``, ``b_f``, ``w_i``, ``b_i``); the learner's parameters are
    the LSTM's cell state.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> rule_params = models.meta_lstm().init(jax.random.PRNGKey(0), {"w": jnp.zeros((3, 2))})
    >>> jax.tree_util.tree_map(jnp.shape, rule_params)
    {'b_f': (), 'b_i': (), 'w_f': (6,), 'w_i': (6,)}

  References:
    Ravi & Larochelle 2017, "Optimization as a Model for Few-Shot Learning"
    (ICLR; no arXiv version); Huisman, Plaat & van Rijn 2022, "Stateless
    Neural Meta-Learning using Second-Order Gradients", arXiv:2104.10527,
    eq. (3.3).
  """
  _checks.positive("preprocess_p", preprocess_p)

  def init(key, params):
    del params
    kf, ki, kbf, kbi = jax.random.split(key, 4)
    return {"w_f": jax.random.uniform(kf, (NUM_INPUTS,), minval=-0.01, maxval=0.01),
            "b_f": jax.random.uniform(kbf, (), minval=4.0, maxval=6.0),
            "w_i": jax.random.uniform(ki, (NUM_INPUTS,), minval=-0.01, maxval=0.01),
            "b_i": jax.random.uniform(kbi, (), minval=-5.0, maxval=-4.0)}

  def init_state(rule_params, params):
    del rule_params
    zeros = jnp.zeros_like(ravel_pytree(params)[0])
    return {"f": zeros, "i": zeros}

  def update(rule_params, gates, params, grads, *, loss, **_):
    cell, unravel = ravel_pytree(params)
    grad = ravel_pytree(grads)[0]
    shared = jnp.concatenate([preprocess(grad, preprocess_p),
                              jnp.broadcast_to(preprocess(loss, preprocess_p), grad.shape + (2,)),
                              cell[:, None]], axis=1)          # [n, 5]
    f = jax.nn.sigmoid(jnp.concatenate([shared, gates["f"][:, None]], 1) @ rule_params["w_f"]
                       + rule_params["b_f"])
    i = jax.nn.sigmoid(jnp.concatenate([shared, gates["i"][:, None]], 1) @ rule_params["w_i"]
                       + rule_params["b_i"])
    return unravel(f * cell - i * grad), {"f": f, "i": i}

  return UpdateRule(init, init_state, update)
