"""Small stateless networks of the papers: sine MLP, logistic regression, LinNet, LeNet."""

from __future__ import annotations

from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp

from metagrad import _checks

from ._conv4 import max_pool_2x2


def _transform(forward) -> hk.Transformed:
  return hk.without_apply_rng(hk.transform(forward))


def mlp(hidden: Sequence[int] = (40, 40), num_outputs: int = 1) -> hk.Transformed:
  """ReLU MLP; the default 1 -> 40 -> 40 -> 1 is the sine-regression network
  of MAML and of the TURTLE paper (section 3.5.2).

  Args:
    hidden: hidden layer widths (each >= 1).
    num_outputs: outputs (>= 1).

  Returns:
    An ``hk.Transformed`` pair ``(init, apply)``; ``apply(params, x)`` maps ``[B,
    in]`` to ``[B, num_outputs]``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> net = models.mlp()
    >>> params = net.init(jax.random.PRNGKey(0), jnp.zeros((3, 1)))
    >>> net.apply(params, jnp.zeros((3, 1))).shape
    (3, 1)

  References:
    Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
    Adaptation of Deep Networks", arXiv:1703.03400 (the sine network).
  """
  hidden = tuple(_checks.count("hidden", h) for h in hidden)
  num_outputs = _checks.count("num_outputs", num_outputs)

  def forward(x):
    return hk.nets.MLP([*hidden, num_outputs], activation=jax.nn.relu)(x)
  return _transform(forward)


def logistic_regression(num_outputs: int = 1) -> hk.Transformed:
  """Logistic regression logits ``W x + b`` on flattened inputs (one logit for
  binary tasks, ``num_outputs`` for multinomial).

  Args:
    num_outputs: 1 for binary tasks, the classes for multinomial (>= 1).

  Returns:
    An ``hk.Transformed`` pair; ``apply(params, x)`` gives ``[B, num_outputs]``
    logits.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> params = models.logistic_regression().init(jax.random.PRNGKey(0), jnp.zeros((3, 4)))
    >>> jax.tree_util.tree_map(jnp.shape, params)
    {'logits': {'b': (1,), 'w': (4, 1)}}

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603.
  """
  num_outputs = _checks.count("num_outputs", num_outputs)

  def forward(x):
    return hk.Linear(num_outputs, name="logits")(x.reshape(x.shape[0], -1))
  return _transform(forward)


def linear_network(hidden: Sequence[int] = (64, 64, 64), num_outputs: int = 1) -> hk.Transformed:
  """LinNet: logistic regression over linear hidden layers (no activations).

  Same capacity as ``logistic_regression``, but over-parameterised, which
  makes it meta-learnable (Kronecker meta-optimizers paper, section 3.2; 3 x
  64 hidden units in A.1.1, 256-128-64-64 on Omniglot).

  Args:
    hidden: widths of the linear hidden layers (each >= 1).
    num_outputs: logits (>= 1).

  Returns:
    An ``hk.Transformed`` pair; ``apply(params, x)`` gives ``[B, num_outputs]``
    logits.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> net = models.linear_network(hidden=(8,))              # linear layers, no activation
    >>> sorted(net.init(jax.random.PRNGKey(0), jnp.zeros((3, 4))))
    ['linear0', 'logits']

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603.
  """
  hidden = tuple(_checks.count("hidden", h) for h in hidden)
  num_outputs = _checks.count("num_outputs", num_outputs)

  def forward(x):
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(hidden):
      h = hk.Linear(width, name=f"linear{i}")(h)
    return hk.Linear(num_outputs, name="logits")(h)
  return _transform(forward)


def lenet(num_classes: int = 10) -> hk.Transformed:
  """LeNet-5 (LeCun et al. 1998), the base model of EvoGrad's section 4.2.

  Args:
    num_classes: outputs of the last layer (>= 1).

  Returns:
    An ``hk.Transformed`` pair; ``apply(params, x)`` maps ``[B, 28, 28, 1]`` images
    to ``[B, num_classes]`` logits.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> net = models.lenet()
    >>> params = jax.jit(net.init)(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
    >>> jax.jit(net.apply)(params, jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)

  References:
    LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to
    Document Recognition" (Proc. IEEE 86(11)); Bohdal, Yang & Hospedales 2021,
    "EvoGrad", arXiv:2106.10575 (the rotation experiment's network).
  """
  num_classes = _checks.count("num_classes", num_classes)

  def forward(x):
    if x.ndim != 4:
      raise ValueError(f"lenet expects images [batch, H, W, C], got shape {x.shape}.")
    if min(x.shape[1:3]) < 12:
      raise ValueError(f"lenet needs images of at least 12x12 (two 2x2 poolings and a "
                       f"valid 5x5 convolution), got {x.shape[1]}x{x.shape[2]}.")
    pool = max_pool_2x2
    h = pool(jax.nn.relu(hk.Conv2D(6, 5, padding="SAME", name="conv0")(x)))
    h = pool(jax.nn.relu(hk.Conv2D(16, 5, padding="VALID", name="conv1")(h)))
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(hk.Linear(120, name="fc0")(h))
    h = jax.nn.relu(hk.Linear(84, name="fc1")(h))
    return hk.Linear(num_classes, name="logits")(h)
  return _transform(forward)
