"""Implicit-function-theorem hypergradients, and iMAML.

Rajeswaran, Finn, Kakade & Levine (2019), "Meta-Learning with Implicit
Gradients" (iMAML), NeurIPS, arXiv:1909.04630; Lorraine, Vicol & Duvenaud
(2020), "Optimizing Millions of Hyperparameters by Implicit Differentiation",
AISTATS, arXiv:1911.02590 (Neumann series); the same construction as jaxopt's
``custom_root`` / ``implicit_diff``, as a pure hypergradient estimator.

If ``params`` is a minimiser ``theta*(lambda)`` of ``train_loss(., lambda)``
(so ``grad_theta train_loss(theta*, lambda) = 0``), the implicit function
theorem gives

    d val_loss(theta*(lambda), lambda) / d lambda
        = d_lambda val_loss - (d^2_{lambda theta} train_loss)^T v,
    (H + damping I) v = grad_theta val_loss,   H = grad^2_theta train_loss(theta*, lambda)

(Lorraine et al. eq. 3; iMAML eq. 6 with the proximal inner loss). ``v`` is
found by conjugate gradients or a truncated Neumann series on Hessian-vector
products (forward-over-reverse, ``jax.jvp`` of ``jax.grad``): the Hessian is
never formed, and memory is that of one gradient, independent of how many
inner steps produced ``theta*``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.scipy.sparse.linalg import cg

from .. import _autodiff, _checks

SOLVERS = ("cg", "neumann")

_tree_add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
_tree_scale = lambda s, a: jax.tree_util.tree_map(lambda x: s * x, a)


def _tree_vdot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                            jax.tree_util.tree_leaves(b)))


def _neumann(matvec: Callable, b: Any, *, num_iterations: int, step: float) -> Any:
  """``A^{-1} b ~ step * sum_{j <= J} (I - step A)^j b`` (Lorraine et al., eq. 9)."""
  def body(_, carry):
    term, total = carry
    term = jax.tree_util.tree_map(lambda t, at: t - step * at, term, matvec(term))
    return term, _tree_add(total, term)
  _, total = jax.lax.fori_loop(0, num_iterations, body, (b, b))
  return _tree_scale(step, total)


@_autodiff.traces_forward_mode
def implicit(train_loss: Callable[[Any, Any], jax.Array],
             val_loss: Callable[[Any, Any], Any], params: Any, hparams: Any,
             key: jax.Array | None = None, *, solver: str = "cg", num_iterations: int = 20,
             damping: float = 0.0, tol: float = 1e-6, neumann_step: float = 0.01,
             has_aux: bool = False) -> Any:
  """The implicit-function-theorem hypergradient at an inner solution.

  Args:
    train_loss: ``(params, hparams) -> scalar``, the inner objective that
      ``params`` minimises (for iMAML: the support loss plus the proximal
      term, see ``imaml``).
    val_loss: ``(params, hparams) -> scalar`` (``-> (scalar, aux)`` with
      ``has_aux``), the outer objective.
    params: theta*, the inner solution your own inner loop produced (e.g.
      ``models.adapt(...).params``); exact when it is a stationary point.
    hparams: lambda, the hyperparameters (or iMAML's meta-initialisation).
    key: unused; accepted for the common hypergradient signature.
    solver: ``"cg"`` (conjugate gradients, ``jax.scipy.sparse.linalg.cg``;
      needs ``H + damping I`` symmetric positive definite) or ``"neumann"``
      (truncated Neumann series; needs ``0 < neumann_step * eig < 2``).
    num_iterations: CG iterations (at most) or Neumann terms; each costs one
      Hessian-vector product.
    damping: added to the Hessian's diagonal (>= 0): regularises an
      ill-conditioned or indefinite Hessian (theta* not an exact minimum);
      ``hessian_extreme_eigenvalues`` measures how indefinite.
    tol: CG's relative residual tolerance (it stops earlier when reached).
    neumann_step: the Neumann series' step (alpha in Lorraine et al.).
    has_aux: ``val_loss`` returns ``(loss, aux)``; the result is
      ``(hypergrads, aux)`` with ``aux`` at ``params``.

  Returns:
    A pytree shaped and typed like ``hparams``; with ``has_aux``,
    ``(hypergrads, aux)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators
    >>> train = lambda p, h: jnp.sum((p["w"] - h["c"]) ** 2)     # inner optimum: w* = c
    >>> val = lambda p, h: jnp.sum((p["w"] - 3.0) ** 2)
    >>> hparams = {"c": jnp.array([1.0, 2.0])}
    >>> g = estimators.implicit(train, val, {"w": hparams["c"]}, hparams)
    >>> [round(x, 4) for x in g["c"].tolist()]                    # d/dc |c - 3|^2
    [-4.0, -2.0]

  References:
    Lorraine, Vicol & Duvenaud 2020, "Optimizing Millions of Hyperparameters
    by Implicit Differentiation", arXiv:1911.02590; Rajeswaran, Finn, Kakade &
    Levine 2019, "Meta-Learning with Implicit Gradients", arXiv:1909.04630.
  """
  solver = _checks.choice("solver", solver, SOLVERS)
  num_iterations = _checks.count("num_iterations", num_iterations)
  _checks.number("damping", damping, minimum=0.0)
  _checks.number("tol", tol, minimum=0.0)
  _checks.positive("neumann_step", neumann_step)
  _checks.bilevel(train_loss, params, hparams, val_loss, has_aux)
  value = (lambda p, h: val_loss(p, h)[0]) if has_aux else val_loss

  grad_theta = lambda p, h: jax.grad(train_loss)(p, h)

  def matvec(u):   # (H + damping I) u by forward-over-reverse
    hu = jax.jvp(lambda p: grad_theta(p, hparams), (params,), (u,))[1]
    return jax.tree_util.tree_map(lambda a, b: a + damping * b, hu, u)

  direct_params, direct_hparams = jax.grad(value, argnums=(0, 1))(params, hparams)
  if solver == "cg":
    v, _ = cg(matvec, direct_params, tol=tol, maxiter=num_iterations)
  else:
    v = _neumann(matvec, direct_params, num_iterations=num_iterations, step=neumann_step)
  v = jax.lax.stop_gradient(v)
  # (d^2_{lambda theta} train_loss)^T v = grad_lambda <grad_theta train_loss, v>.
  mixed = jax.grad(lambda h: _tree_vdot(grad_theta(params, h), v))(hparams)
  hypergrads = jax.tree_util.tree_map(lambda d, m: (d - m).astype(jnp.result_type(d)),
                                      direct_hparams, mixed)
  return _checks.with_aux(hypergrads, val_loss, (params, hparams), has_aux)


def proximal(loss_fn: Callable[[Any], jax.Array], anchor: Any, *, reg: float) -> Callable:
  """iMAML's inner objective ``theta -> loss_fn(theta) + reg/2 ||theta - anchor||^2``
  (eq. 4 of iMAML), for the inner loop that produces ``theta*``.

  Args:
    loss_fn: ``theta -> scalar``, the task's support loss.
    anchor: theta_0, the point the proximal term pulls towards.
    reg: lambda (> 0).

  Returns:
    ``theta -> scalar``, the proximal objective (``-> (scalar, aux)`` when
    ``loss_fn`` returns aux).

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators
    >>> inner = estimators.proximal(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(2)}, reg=2.0)
    >>> float(inner({"w": jnp.zeros(2)}))       # 0 + reg / 2 * |0 - 1|^2
    2.0

  References:
    Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit
    Gradients", arXiv:1909.04630, eq. (4).
  """
  _checks.positive("reg", reg)

  def objective(theta):
    gap = jax.tree_util.tree_map(lambda t, a: t - a, theta, anchor)
    return loss_fn(theta) + 0.5 * reg * _tree_vdot(gap, gap)
  return objective


class ImamlInfo(NamedTuple):
  """How well the inner loop solved iMAML's proximal problem
  (``imaml(..., return_info=True)``).

  Attributes:
    residual_ratio: ``|grad G(adapted)| / |grad G(meta_params)|`` for the
      proximal objective ``G(theta) = support_loss(theta) + reg/2 ||theta -
      meta_params||^2``: eq. 6 assumes 0; above 1 the inner loop moved away
      from the solution (a diverging step).
    solved: whether the ratio is below 1 and the meta-gradient finite -- the
      tasks to average over (the others have no valid implicit gradient).

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import estimators, models
    >>> support = lambda w: jnp.sum((w - 1.0) ** 2)
    >>> query = lambda w: jnp.sum(w ** 2)
    >>> theta0 = jnp.zeros(2)
    >>> inner = estimators.proximal(support, theta0, reg=2.0)
    >>> adapted = models.adapt(inner, theta0, models.sgd(0.25), {}, steps=20).params
    >>> grads, info = estimators.imaml(support, query, adapted, theta0, reg=2.0,
    ...                                return_info=True)
    >>> bool(info.solved), float(info.residual_ratio) < 1e-5
    (True, True)
  """
  residual_ratio: jax.Array
  solved: jax.Array


@_autodiff.traces_forward_mode
def imaml(support_loss: Callable[[Any], jax.Array], query_loss: Callable[[Any], Any],
          adapted: Any, meta_params: Any, key: jax.Array | None = None, *, reg: float,
          return_info: bool = False, **solver_kwargs) -> Any:
  """iMAML meta-gradient (Rajeswaran et al. 2019, eq. 6):

      d query_loss(theta*) / d theta_0 = (I + H_S / reg)^{-1} grad query_loss(theta*)

  where ``adapted`` ~ theta* = argmin_theta support_loss(theta) + reg/2
  ||theta - theta_0||^2 (e.g. ``models.adapt(proximal(support_loss,
  meta_params, reg=reg), meta_params, models.sgd(lr), {}, steps=T).params``).
  Memory is independent of the T steps that found ``adapted``: only one
  gradient and Hessian-vector products are kept.

  The formula holds at a solution, so the inner loop must actually solve the
  proximal problem: plain gradient descent on it is stable only for a step
  below 2 / (lambda_max(H_S) + reg), which a conv learner's sharp support loss
  can put well under MAML's usual inner step (the gradient left after
  adaptation is the check; a line search, e.g. ``models.optax_rule`` with
  ``optax.lbfgs``, removes the choice of step).

  It also needs ``H_S + reg I`` positive definite (theta* a strict local
  minimum), which a batch-statistics conv4 on a 1-shot support set can break;
  conjugate gradients on an indefinite ``I + H_S / reg`` return vectors far
  from the solve. ``damping=d`` solves ``reg (H_S + (reg + d) I)^{-1} g``
  instead, positive definite once ``reg + d > -lambda_min(H_S)``. The iMAML
  authors' code uses ``(2 I + H_S / (reg + 10))^{-1} g``
  (aravindr93/imaml_dev, ``regu_coef=1``, ``lam_damping=10``): ``d = reg +
  20`` up to the factor ``reg / (reg + 10)``. Measure ``lambda_min(H_S)`` on
  your own tasks with ``hessian_extreme_eigenvalues`` (``support_loss``,
  ``adapted``); the documentation's "iMAML vs MAML" reproduction measures
  both conditions on Omniglot.

  Args:
    support_loss: ``theta -> scalar``, the task's training loss.
    query_loss: ``theta -> scalar`` (``-> (scalar, aux)`` with ``has_aux``).
    adapted: theta*, the (approximate) minimiser of the proximal objective.
    meta_params: theta_0, the meta-learned initialisation (the anchor).
    key: unused (common signature).
    reg: the proximal strength lambda of iMAML (> 0).
    return_info: also return an ``ImamlInfo`` (the proximal gradient left
      after adaptation relative to its start, and whether the task counts as
      solved), last in the result tuple.
    **solver_kwargs: ``solver``, ``num_iterations``, ``damping``, ``tol``,
      ``neumann_step``, ``has_aux`` of ``implicit``.

  Returns:
    The meta-gradient, shaped like ``meta_params``; with ``has_aux``,
    ``(grads, aux)``; with ``return_info``, ``ImamlInfo`` last.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators, models
    >>> x = jnp.linspace(-1.0, 1.0, 8)[:, None]; y = 2.0 * x[:, 0]
    >>> support = lambda p: jnp.mean((x @ p["w"] - y) ** 2)
    >>> query = lambda p: jnp.mean((x @ p["w"] - y - 0.1) ** 2)
    >>> theta0 = {"w": jnp.zeros(1)}
    >>> inner = estimators.proximal(support, theta0, reg=1.0)
    >>> adapted = models.adapt(inner, theta0, models.sgd(0.2), {}, steps=50).params
    >>> grads, info = estimators.imaml(support, query, adapted, theta0, reg=1.0,
    ...                                return_info=True)
    >>> bool(info.solved), bool(info.residual_ratio < 1e-3)
    (True, True)

  References:
    Rajeswaran, Finn, Kakade & Levine (2019), "Meta-Learning with Implicit
    Gradients", arXiv:1909.04630.
  """
  _checks.positive("reg", reg)
  _checks.float_pytree("adapted", adapted)
  _checks.float_pytree("meta_params", meta_params)
  _checks.same_structure("adapted", adapted, "meta_params", meta_params)
  train = lambda theta, theta0: proximal(support_loss, theta0, reg=reg)(theta)
  val = lambda theta, theta0: query_loss(theta)
  # H of the proximal objective is H_S + reg I, and d^2/dtheta0 dtheta = -reg I,
  # so implicit() returns reg (H_S + reg I)^{-1} g = (I + H_S/reg)^{-1} g.
  out = implicit(train, val, adapted, meta_params, key, **solver_kwargs)
  if not _checks.boolean("return_info", return_info):
    return out
  grads = out[0] if solver_kwargs.get("has_aux", False) else out
  objective = proximal(support_loss, jax.lax.stop_gradient(meta_params), reg=reg)
  norm = lambda p: optax.global_norm(jax.grad(objective)(p))
  ratio = norm(adapted) / norm(meta_params)
  info = ImamlInfo(ratio, jnp.isfinite(ratio) & (ratio < 1.0)
                   & jnp.isfinite(optax.global_norm(grads)))
  return (*out, info) if isinstance(out, tuple) else (out, info)
