"""Factored meta-optimizers: Meta-Curvature, KLin, KFC (Kronecker) and CFC (Cholesky).

Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
Meta-Optimizers for Meta Learning", arXiv:1910.13603, section 4.2 and A.1.2 / A.2.3. Each matrix-like
parameter's gradient ``G`` is transformed by a chain of factored linear maps,

    KLin:  U(G) = L G R                              (eq. 5, no bias)
    KFC:   U(G) = L_h s(... s(L_1 G R_1) ...) R_h     (eq. 6-7, s = ReLU)
    CFC:   U(g) = M_h (M_h^T s(... M_1 (M_1^T g)))    (eq. 8, rank-r, no bias)

and the update is ``theta <- theta - lr * U(G)``. Layouts: a dense kernel
``[in, out]`` uses ``L in R^{in x in}``, ``R in R^{out x out}`` (the paper's
m = 100, n = 1 for 100-d logistic regression: 10,001 parameters); a conv
kernel ``[kh, kw, c_in, c_out]`` is seen as ``c_out`` matrices ``[kh*kw, c_in]``
sharing ``L in R^{HW x HW}``, ``R in R^{C x C}`` (m = C, n = HW, A.1.2). Vectors
(biases, norm scales) get plain SGD.

KLin/KFC normalise ``G`` to unit norm and rescale the output by the norm times
a learnable factor (init 1; A.1.2), start from identity factors, and are
themselves adapted in the inner loop (eq. 3-4):

    theta_{t+1} = theta_t - lr U_{xi_t}(g_t),   xi_{t+1} = xi_t - lr_xi grad_xi L(theta_{t+1}).

Meta-Curvature (Park & Oliva 2019) is the KLin transform without adaptation
and without normalisation (section 5.3: "Meta-Curvature corresponds to KLin
without adapting the optimizer").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metagrad import _checks

from ._inner_loop import UpdateRule, support_gradient


def _as_matrix_stack(x):
  """``[in, out] -> [in, out, 1]``; ``[kh, kw, cin, cout] -> [kh*kw, cin, cout]``."""
  if x.ndim == 2:
    return x[:, :, None]
  if x.ndim == 4:
    kh, kw, cin, cout = x.shape
    return x.reshape(kh * kw, cin, cout)
  return None


def _transformed(x) -> bool:
  return x.ndim in (2, 4)


def _kronecker_apply(layers, g3, activation):
  h = g3
  for i, (left, right) in enumerate(layers):
    if i:
      h = activation(h)
    h = jnp.einsum("ij,jks,kl->ils", left, h, right)
  return h


def _normalised(fn, g, rule_leaf, normalize):
  if not normalize:
    return fn(g)
  norm = jnp.sqrt(jnp.sum(g**2))
  unit = g / jnp.where(norm > 0, norm, 1.0)
  return fn(unit) * norm * rule_leaf["scale"]


def _factored_rule(*, lr, init_leaf, apply_leaf, normalize, adapt_optimizer,
                   optimizer_lr) -> UpdateRule:
  """Shared skeleton of every factored rule: transform each matrix gradient,
  SGD on the rest, optionally adapt the optimizer on the support loss."""
  _checks.positive("lr", lr)
  optimizer_lr = lr if optimizer_lr is None else optimizer_lr
  _checks.positive("optimizer_lr", optimizer_lr)
  _checks.boolean("normalize", normalize)
  _checks.boolean("adapt_optimizer", adapt_optimizer)

  def init(key, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for k, p in zip(keys, leaves):
      if not _transformed(p):
        out.append(None)
        continue
      leaf = init_leaf(k, p)
      if normalize:
        leaf["scale"] = jnp.ones((), p.dtype)
      out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)

  def direction(optimizer, grads):
    def one(g, leaf):
      if leaf is None:
        return g
      return _normalised(lambda u: apply_leaf(leaf, u), g, leaf, normalize)
    return jax.tree_util.tree_map(one, grads, optimizer)

  def step_params(optimizer, params, grads):
    return jax.tree_util.tree_map(lambda p, d: p - lr * d, params,
                                  direction(optimizer, grads))

  def init_state(rule_params, params):
    del params
    return rule_params          # the optimizer being adapted within the task

  def update(rule_params, optimizer, params, grads, *, loss_fn, **_):
    del rule_params
    new_params = step_params(optimizer, params, grads)
    if adapt_optimizer:
      # eq. (4): xi <- xi - lr_xi * d L(theta_{t+1}(xi)) / d xi
      opt_grads = support_gradient(lambda xi: loss_fn(step_params(xi, params, grads)),
                                   optimizer, loss_fn)
      optimizer = jax.tree_util.tree_map(lambda x, d: x - optimizer_lr * d, optimizer, opt_grads)
    return new_params, optimizer

  return UpdateRule(init, init_state, update)


def _kronecker_init(num_layers):
  def init_leaf(key, p):
    del key
    g3 = _as_matrix_stack(jnp.zeros_like(p))
    a, b = g3.shape[0], g3.shape[1]
    return {"layers": [(jnp.eye(a, dtype=p.dtype), jnp.eye(b, dtype=p.dtype))
                       for _ in range(num_layers)]}
  return init_leaf


def _kronecker_leaf_apply(leaf, g):
  out = _kronecker_apply(leaf["layers"], _as_matrix_stack(g), jax.nn.relu)
  return out.reshape(g.shape)


def meta_curvature(lr: float) -> UpdateRule:
  """Meta-Curvature: ``theta <- theta - lr * L G R`` with identity-initialised
  per-layer curvature factors, meta-learned but not adapted per task.

  Args:
    lr: the adaptation learning rate.

  Returns:
    An ``UpdateRule`` whose meta-parameters are each parameter's curvature factors
    ``L`` and ``R`` (square matrices, identity at initialisation).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> rule_params = models.meta_curvature(0.1).init(jax.random.PRNGKey(0), {"w": jnp.zeros((3, 2))})
    >>> jax.tree_util.tree_map(jnp.shape, rule_params)
    {'w': {'layers': [((3, 3), (2, 2))]}}

  References:
    Park & Oliva 2019, "Meta-Curvature", arXiv:1902.03356.
  """
  return _factored_rule(lr=lr, init_leaf=_kronecker_init(1), apply_leaf=_kronecker_leaf_apply,
                        normalize=False, adapt_optimizer=False, optimizer_lr=None)


def klin(lr: float, *, optimizer_lr: float | None = None, adapt_optimizer: bool = True,
         normalize: bool = True) -> UpdateRule:
  """KLin: Kronecker-factored linear meta-optimizer (eq. 5, no bias).

  Args:
    lr: the adaptation learning rate.
    optimizer_lr: step of the optimizer's own adaptation (eq. 4); ``lr`` if None.
    adapt_optimizer: adapt L and R in the inner loop (eq. 3-4).
    normalize: unit-norm gradient in, norm times a learnable scale out (A.1.2).

  Returns:
    An ``UpdateRule`` whose meta-parameters are one pair of Kronecker factors and a
    scale per parameter.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> rule_params = models.klin(0.1).init(jax.random.PRNGKey(0), {"w": jnp.zeros((3, 2))})
    >>> jax.tree_util.tree_map(jnp.shape, rule_params)      # L (3x3), R (2x2), a scale
    {'w': {'layers': [((3, 3), (2, 2))], 'scale': ()}}

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603.
  """
  return _factored_rule(lr=lr, init_leaf=_kronecker_init(1), apply_leaf=_kronecker_leaf_apply,
                        normalize=normalize, adapt_optimizer=adapt_optimizer,
                        optimizer_lr=optimizer_lr)


def kfc(lr: float, *, num_layers: int = 2, optimizer_lr: float | None = None,
        adapt_optimizer: bool = True, normalize: bool = True) -> UpdateRule:
  """KFC: ``num_layers`` Kronecker-factored linear maps with ReLUs between
  (eq. 6-7; 2 layers = the synthetic experiments' single hidden layer with
  20,002 parameters, 4 layers for the CNNs of A.1.2).

  Args:
    lr: the adaptation learning rate.
    num_layers: Kronecker-factored layers, ReLUs between them (>= 1).
    optimizer_lr: step of the optimizer's own adaptation (eq. 4); ``lr`` if None.
    adapt_optimizer: adapt the factors in the inner loop (eq. 3-4).
    normalize: unit-norm gradient in, norm times a learnable scale out (A.1.2).

  Returns:
    An ``UpdateRule`` whose meta-parameters are each parameter's Kronecker factor
    pairs, ``num_layers`` of them.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> rule_params = models.kfc(0.1).init(jax.random.PRNGKey(0), {"w": jnp.zeros((3, 2))})
    >>> jax.tree_util.tree_map(jnp.shape, rule_params)       # two Kronecker layers
    {'w': {'layers': [((3, 3), (2, 2)), ((3, 3), (2, 2))], 'scale': ()}}

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603.
  """
  num_layers = _checks.count("num_layers", num_layers)
  return _factored_rule(lr=lr, init_leaf=_kronecker_init(num_layers),
                        apply_leaf=_kronecker_leaf_apply, normalize=normalize,
                        adapt_optimizer=adapt_optimizer, optimizer_lr=optimizer_lr)


def cfc(lr: float, *, rank: int = 1, num_layers: int = 2, gain: float = 1.0,
        optimizer_lr: float | None = None, adapt_optimizer: bool = True,
        normalize: bool = True) -> UpdateRule:
  """CFC (A.2.3): rank-``rank`` Cholesky factors ``A = M M^T`` on the flattened
  gradient, chained with ReLUs; ``M`` is Glorot-initialised (identity is not
  in the span of low-rank factors), ``M_ij ~ N(0, gain * 2 / (n + r))``.

  Args:
    lr: the adaptation learning rate.
    rank: r, columns of each Cholesky factor M (>= 1).
    num_layers: factored layers, ReLUs between them.
    gain: scale of the Glorot initialisation (> 0).
    optimizer_lr: step of the optimizer's own adaptation (eq. 4); ``lr`` if None.
    adapt_optimizer: adapt the factors in the inner loop (eq. 3-4).
    normalize: unit-norm gradient in, norm times a learnable scale out (A.1.2).

  Returns:
    An ``UpdateRule`` whose meta-parameters are each parameter's rank-``rank``
    Cholesky factors, ``num_layers`` of them.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> rule_params = models.cfc(0.1).init(jax.random.PRNGKey(0), {"w": jnp.zeros((3, 2))})
    >>> jax.tree_util.tree_map(jnp.shape, rule_params)       # rank-1 Cholesky factors
    {'w': {'layers': [(6, 1), (6, 1)], 'scale': ()}}

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603.
  """
  rank = _checks.count("rank", rank)
  num_layers = _checks.count("num_layers", num_layers)
  _checks.positive("gain", gain)

  def init_leaf(key, p):
    n = p.size
    std = math.sqrt(gain * 2.0 / (n + rank))
    keys = jax.random.split(key, num_layers)
    return {"layers": [std * jax.random.normal(k, (n, rank), p.dtype) for k in keys]}

  def apply_leaf(leaf, g):
    h = g.reshape(-1)
    for i, m in enumerate(leaf["layers"]):
      if i:
        h = jax.nn.relu(h)
      h = m @ (m.T @ h)
    return h.reshape(g.shape)

  return _factored_rule(lr=lr, init_leaf=init_leaf, apply_leaf=apply_leaf, normalize=normalize,
                        adapt_optimizer=adapt_optimizer, optimizer_lr=optimizer_lr)
