"""Argument checks shared by every estimator.

Every check raises ``ValueError`` naming the offending argument. Checks on
values only run when the value is concrete (a Python number or a concrete
array); a traced hyperparameter (e.g. a learned sigma passed under ``jit``)
cannot be inspected and is trusted.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(value: Any):
  """Returns ``value`` as a NumPy value, or None if it is a tracer."""
  if isinstance(value, jax.core.Tracer):
    return None
  return np.asarray(value)


def positive(name: str, value: Any) -> None:
  v = _concrete(value)
  if v is None:
    return
  if v.ndim != 0 or not np.issubdtype(v.dtype, np.number):
    raise ValueError(f"`{name}` must be a positive scalar, got {value!r}.")
  if not np.isfinite(v) or v <= 0:
    raise ValueError(f"`{name}` must be positive and finite, got {value!r}.")


def population(value: Any, *, antithetic: bool, minimum: int = 2) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
    raise ValueError(f"`population` must be a Python int, got {value!r}.")
  if value < minimum:
    raise ValueError(f"`population` must be at least {minimum}, got {value}.")
  if antithetic and value % 2:
    raise ValueError(
        f"`population` must be even when `antithetic=True` (members come in "
        f"+/- pairs), got {value}.")
  return int(value)


def count(name: str, value: Any) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
    raise ValueError(f"`{name}` must be a Python int, got {value!r}.")
  if value < 1:
    raise ValueError(f"`{name}` must be at least 1, got {value}.")
  return int(value)


def chunk_size(value: Any, *, allow_auto: bool = False) -> int | str | None:
  if value is None or (allow_auto and isinstance(value, str) and value == "auto"):
    return value
  if isinstance(value, str):
    allowed = "a positive int, None or 'auto'" if allow_auto else "a positive int or None"
    raise ValueError(f"`chunk_size` must be {allowed}, got {value!r}.")
  return count("chunk_size", value)


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
  if value not in allowed:
    raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")
  return value


def float_pytree(name: str, tree: Any) -> None:
  """Every leaf must be an inexact (floating) array; the tree non-empty."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    raise ValueError(f"`{name}` has no leaves: nothing to differentiate.")
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(
          f"`{name}` leaf {jax.tree_util.keystr(path) or '<root>'} has dtype "
          f"{dtype}; gradients need floating-point leaves (cast it, or close "
          f"over it in the loss instead of passing it as a parameter).")


def scalar_loss(name: str, fn: Callable[..., Any], *args: Any) -> None:
  """``fn(*args)`` must return a real floating scalar (checked abstractly)."""
  out = jax.eval_shape(fn, *args)
  shape = getattr(out, "shape", None)
  dtype = getattr(out, "dtype", None)
  if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"`{name}` must return a floating-point scalar, got "
        f"{jax.tree_util.tree_map(lambda o: (o.shape, o.dtype), out)}.")
