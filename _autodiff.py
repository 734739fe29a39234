"""Mixed-mode (forward-over-reverse) derivatives of an inner gradient.

``mixed_value_and_grad(fn)`` is ``jax.value_and_grad(fn)`` whose own reverse-mode
derivative -- what a meta-gradient needs at every inner step -- is computed
by forward-over-reverse instead of reverse-over-reverse (MixFlow-MG: Kemaev,
Calian, Zintgraf, Farquhar & van Hasselt (2025), "Scalable Meta-Learning via
Mixed-Mode Differentiation", arXiv:2505.00793, Algorithm 2):

* the forward pass saves only the inputs ``x`` (and the values ``fn`` closes
  over, ``c``, made explicit inputs), not the residuals of ``fn``'s forward *and*
  backward pass that plain reverse mode keeps for every step;
* the backward pass turns the cotangent ``(u, v)`` of ``(L, grad_x L)`` into
  ``u grad L + H v`` with one JVP of the full gradient
  ``(x, c) -> grad_{(x, c)} L`` along ``(v, 0)``. This is the VJP because
  second derivatives are symmetric: ``(d grad_x L / dx)^T v = H_xx v`` and
  ``(d grad_x L / dc)^T v = H_cx v``, both read off the one JVP.

A custom VJP has no JVP, so under forward-mode differentiation (the
estimators that push tangents: ``forward_mode``, ``forward_gradient``, the
Hessian-vector products of ``implicit``/``imaml``/``hessian_extreme_eigenvalues``)
the plain ``jax.value_and_grad`` is used instead; those estimators mark their
tracing with ``forward_mode_trace``. Both give the same values.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

_FORWARD = contextvars.ContextVar("metagrad_forward_mode_trace", default=False)


@contextlib.contextmanager
def forward_mode_trace():
  """While active, ``mixed_value_and_grad`` is the plain
  ``jax.value_and_grad`` (it will be differentiated by forward mode)."""
  token = _FORWARD.set(True)
  try:
    yield
  finally:
    _FORWARD.reset(token)


def traces_forward_mode(estimator: Callable) -> Callable:
  """Decorator: the estimator's body (and so every trace of the user's loss it
  makes) runs under ``forward_mode_trace``."""
  @functools.wraps(estimator)
  def wrapped(*args, **kwargs):
    with forward_mode_trace():
      return estimator(*args, **kwargs)
  return wrapped


def in_forward_mode_trace() -> bool:
  return _FORWARD.get()


def _is_float(x: Any) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _value_and_grad(loss, x, consts):
  return jax.value_and_grad(loss)(x, *consts)


def _value_and_grad_fwd(loss, x, consts):
  # Residuals: the inputs only; the backward pass recomputes the rest.
  return _value_and_grad(loss, x, consts), (x, consts)


def _value_and_grad_bwd(loss, residuals, cotangents):
  x, consts = residuals
  u, v = cotangents
  floats = [i for i, c in enumerate(consts) if _is_float(c)]

  def full_gradient(x_):
    def of_floats(x_, *float_consts):
      args = list(consts)
      for i, c in zip(floats, float_consts):
        args[i] = c
      return loss(x_, *args)
    return jax.grad(of_floats, argnums=tuple(range(1 + len(floats))))(
        x_, *(consts[i] for i in floats))

  # One forward-over-reverse pass: the gradient and its derivative along v.
  grads, hessian_v = jax.jvp(full_gradient, (x,), (v,))
  out = jax.tree_util.tree_map(lambda g, h: (u * g).astype(h.dtype) + h, grads, hessian_v)
  out = jax.tree_util.tree_map(_typed_like, out, (x, *(consts[i] for i in floats)))
  consts_ct = [None] * len(consts)
  for i, ct in zip(floats, out[1:]):
    consts_ct[i] = ct
  return out[0], tuple(consts_ct)


_value_and_grad.defvjp(_value_and_grad_fwd, _value_and_grad_bwd)


def mixed_value_and_grad(fn: Callable[[Any], jax.Array]) -> Callable[[Any], tuple]:
  """``jax.value_and_grad(fn)`` differentiated by forward-over-reverse (module
  docstring); the plain one under ``forward_mode_trace``."""
  def value_and_grad(x):
    if in_forward_mode_trace():
      return jax.value_and_grad(fn)(x)
    converted, consts = _closure_convert(fn, x)
    return _value_and_grad(converted, x, consts)
  return value_and_grad


def _closure_convert(fn: Callable, x: Any) -> tuple[Callable, tuple]:
  """``fn`` as ``converted(x, *consts)`` with *every* value it closes over an
  explicit input: the meta-parameters of a learned loss get their cotangents,
  and the batch of a ``vmap`` around the inner loop (a tracer the support
  loss closes over) does not leak into the backward pass, which runs outside
  that trace. (``jax.closure_convert`` hoists only values that may carry
  derivatives.)"""
  closed = jax.make_jaxpr(fn)(x)
  if len(closed.out_avals) != 1:
    raise ValueError(f"`loss_fn` must return one scalar, got {len(closed.out_avals)} outputs.")

  def converted(x_, *consts):
    return jax.core.eval_jaxpr(closed.jaxpr, list(consts), *jax.tree_util.tree_leaves(x_))[0]
  return converted, tuple(closed.consts)


def _vma(leaf: Any) -> frozenset:
  """The manual (``shard_map``) axes over which ``leaf`` (an array, a tracer or
  a ``jax.ShapeDtypeStruct``) differs by device."""
  aval = leaf if isinstance(leaf, jax.ShapeDtypeStruct) else jax.typeof(leaf)
  manual = getattr(aval, "manual_axis_type", None)
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", None) or ())


def varying_like(tree: Any, reference: Any) -> Any:
  """``tree``'s floating leaves cast to vary over every ``shard_map`` axis that
  ``reference`` varies over (a no-op outside ``shard_map``).

  Inside ``shard_map``, ``jax.grad`` with respect to a value that is the same
  on every device (replicated meta-parameters) of a loss that differs by
  device (each device's tasks) returns the gradient *summed over devices*.
  An inner loop started from replicated parameters would then adapt every
  task on the sum of all devices' support gradients. Cast first, and each
  device's inner gradient is its own; the outer gradient with respect to the
  replicated value is still the sum over devices (the cast's transpose).
  """
  axes = frozenset().union(*(_vma(leaf) for leaf in jax.tree_util.tree_leaves(reference)))
  if not axes:
    return tree

  def cast(leaf):
    missing = tuple(sorted(axes - _vma(leaf))) if _is_float(leaf) else ()
    return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf
  return jax.tree_util.tree_map(cast, tree)


def _typed_like(cotangent: Any, primal: Any) -> Any:
  """Inside ``shard_map`` an input that is the same on every device (theta_0)
  meets data that differ (each device's tasks), and its cotangent differs per
  device. Plain autodiff casts such an input to varying and transposes the
  cast into a sum over the axis; a custom VJP must hand back cotangents typed
  like its inputs, so it sums here."""
  extra = tuple(sorted(_vma(cotangent) - _vma(primal)))
  return jax.lax.psum(cotangent, extra) if extra else cotangent
