"""Argument checks shared by the whole library (estimators, models, tasks).

Every check raises ``ValueError`` naming the offending argument and what it
accepts. Checks on values only run when the value is concrete (a Python number
or a concrete array); a traced hyperparameter (e.g. a learned sigma passed
under ``jit``) cannot be inspected and is trusted. Integers that fix shapes
must be static (see ``integer``).
"""

from __future__ import annotations

import sys
import warnings
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


def integer(name: str, value: Any, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
  """A static integer: a Python int, a NumPy integer or a concrete JAX integer
  scalar (what configs and arrays hand over). Bools, floats and traced values
  are refused: these integers fix array shapes, so they must be known when
  tracing."""
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"`{name}` must be a static int, got a traced value {value!r}: it fixes array "
        f"shapes, so pass a Python int (or mark it static, e.g. jit's static_argnames).")
  if isinstance(value, (bool, np.bool_)):
    raise ValueError(f"`{name}` must be an int, got the bool {value!r}.")
  if isinstance(value, (int, np.integer)):
    out = int(value)
  elif (isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0
        and np.issubdtype(value.dtype, np.integer)):
    out = int(value)
  else:
    raise ValueError(f"`{name}` must be an int, got {value!r}.")
  if minimum is not None and out < minimum:
    raise ValueError(f"`{name}` must be at least {minimum}, got {out}.")
  if maximum is not None and out > maximum:
    raise ValueError(f"`{name}` must be at most {maximum}, got {out}.")
  return out


def population(value: Any, *, antithetic: bool, minimum: int = 2) -> int:
  value = integer("population", value, minimum=minimum)
  if antithetic and value % 2:
    raise ValueError(
        f"`population` must be even when `antithetic=True` (members come in "
        f"+/- pairs), got {value}.")
  return value


def count(name: str, value: Any) -> int:
  """A static int >= 1 (see ``integer``)."""
  return integer(name, value, minimum=1)


def rank(name: str, value: Any, ndim: int) -> None:
  """``value`` must be an array of rank ``ndim``."""
  shape = np.shape(value)
  if len(shape) != ndim:
    raise ValueError(f"`{name}` must have rank {ndim}, got shape {tuple(shape)}.")


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


def boolean(name: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"`{name}` must be True or False, got {value!r}.")
  return bool(value)


def number(name: str, value: Any, *, minimum: float | None = None,
           maximum: float | None = None, exclusive: bool = False) -> None:
  """A finite real scalar in ``[minimum, maximum]`` (open with ``exclusive``);
  skipped for traced values."""
  v = _concrete(value)
  if v is None:
    return
  if isinstance(value, (bool, np.bool_)) or v.ndim != 0 or not (
      np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
    raise ValueError(f"`{name}` must be a real number, got {value!r}.")
  if not np.isfinite(v):
    raise ValueError(f"`{name}` must be finite, got {value!r}.")
  low = minimum is not None and (v <= minimum if exclusive else v < minimum)
  high = maximum is not None and (v >= maximum if exclusive else v > maximum)
  if low or high:
    lo = "-inf" if minimum is None else minimum
    hi = "inf" if maximum is None else maximum
    interval = f"({lo}, {hi})" if exclusive else f"[{lo}, {hi}]"
    raise ValueError(f"`{name}` must be in {interval}, got {value!r}.")


def prng_key(name: str, key: Any) -> None:
  """A JAX PRNG key: a typed key array (``jax.random.key``) or a raw uint32
  key (``jax.random.PRNGKey``), a single one (not a batch)."""
  dtype = getattr(key, "dtype", None)
  shape = getattr(key, "shape", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise ValueError(f"`{name}` must be a single PRNG key, got a key array of shape {shape} "
                       f"(vmap over keys instead of passing a batch).")
    return
  if dtype == jnp.uint32 and shape is not None and len(shape) == 1 and shape[0] in (2, 4):
    return
  if dtype == jnp.uint32 and shape is not None and len(shape) >= 2 and shape[-1] in (2, 4):
    raise ValueError(f"`{name}` must be a single PRNG key, got a batch of keys of shape {shape}: "
                     f"pass one key (jax.vmap over the keys to get one result per key).")
  raise ValueError(
      f"`{name}` must be a JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), "
      f"got {key!r}" + (f" of shape {shape} and dtype {dtype}" if shape is not None else "") + ".")


def same_structure(name: str, tree: Any, other_name: str, other: Any) -> None:
  """``tree`` and ``other`` must have the same tree structure and leaf shapes
  (dtypes may differ: an adapted copy may be kept in another precision)."""
  describe = lambda t: jax.tree_util.tree_map(lambda x: f"{jnp.result_type(x)}{list(jnp.shape(x))}", t)
  if (jax.tree_util.tree_structure(tree) != jax.tree_util.tree_structure(other)
      or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree_util.tree_leaves(tree),
                                                          jax.tree_util.tree_leaves(other)))):
    raise ValueError(f"`{name}` and `{other_name}` must have the same structure and shapes "
                     f"(both are parameters of one model), got {describe(tree)} and "
                     f"{describe(other)}.")


def _describe(out: Any) -> Any:
  return jax.tree_util.tree_map(lambda o: (getattr(o, "shape", None), getattr(o, "dtype", None)),
                                out)


def scalar_loss(name: str, fn: Callable[..., Any], *args: Any,
                has_aux: bool = False) -> Callable[..., jax.Array]:
  """Checks (abstractly, nothing runs) that ``fn(*args)`` returns a real
  floating scalar -- or ``(scalar, aux)`` with ``has_aux`` -- and returns the
  scalar part as a function returning an array (a Python float is accepted)."""
  has_aux = boolean("has_aux", has_aux)
  out = jax.eval_shape(fn, *args)
  value = out
  if has_aux:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
      raise ValueError(f"`{name}` must return a pair (loss, aux) when has_aux=True, got "
                       f"{_describe(out)}.")
    value = out[0]
  shape = getattr(value, "shape", None)
  dtype = getattr(value, "dtype", None)
  if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    what = "its loss (first output)" if has_aux else "a floating-point scalar"
    hint = (" (with an auxiliary output, pass has_aux=True)"
            if not has_aux and isinstance(out, (tuple, list)) else "")
    raise ValueError(f"`{name}` must return {what} with shape () and a floating dtype, got "
                     f"{_describe(value)}{hint}.")
  if has_aux:
    return lambda *a: jnp.asarray(fn(*a)[0])
  return lambda *a: jnp.asarray(fn(*a))


def with_aux(result: Any, fn: Callable[..., Any], args: tuple, has_aux: bool,
             info: Any = None, return_info: bool = False) -> Any:
  """``result``, then ``aux`` from ``fn(*args)`` (the unperturbed point) when
  ``has_aux``, then ``info`` when ``return_info``: ``grads``, ``(grads, aux)``,
  ``(grads, info)`` or ``(grads, aux, info)``."""
  out = (result, fn(*args)[1]) if has_aux else (result,)
  if boolean("return_info", return_info):
    out = (*out, info)
  return out if len(out) > 1 else out[0]


def bilevel(train_loss: Callable, params: Any, hparams: Any, val_loss: Callable | None = None,
            has_aux: bool = False) -> None:
  """The hypergradient estimators' shared checks: floating ``params`` and
  ``hparams``, scalar ``train_loss(params, hparams)`` and (if given)
  ``val_loss(params, hparams)``."""
  float_pytree("params", params)
  float_pytree("hparams", hparams)
  scalar_loss("train_loss", train_loss, params, hparams)
  if val_loss is not None:
    scalar_loss("val_loss", val_loss, params, hparams, has_aux=has_aux)


def _user_stacklevel() -> int:
  """The ``warnings.warn`` stacklevel of the first frame outside metagrad (so a
  deprecation points at the user's call, through any decorator)."""
  level, frame = 1, sys._getframe(1)
  while frame is not None and frame.f_globals.get("__name__", "").startswith("metagrad."):
    level, frame = level + 1, frame.f_back
  return level


def renamed(new_name: str, new_value: Any, default: Any, old_name: str, old_value: Any) -> Any:
  """A keyword renamed in this release: ``old_value`` (not None) wins over the
  new keyword's ``default`` with a ``DeprecationWarning``; both given is an
  error naming both."""
  if old_value is None:
    return new_value
  if new_value is not default and new_value != default:
    raise ValueError(f"`{old_name}` is the deprecated name of `{new_name}`: pass only "
                     f"`{new_name}`, got both ({old_value!r} and {new_value!r}).")
  warnings.warn(f"`{old_name}` is deprecated and will be removed in the next release: use "
                f"`{new_name}={old_value!r}`.", DeprecationWarning,
                stacklevel=_user_stacklevel())
  return old_value


def renamed_choice(name: str, value: Any, aliases: dict[str, str]) -> Any:
  """``value``, or the current spelling of a deprecated one (with a
  ``DeprecationWarning``)."""
  if isinstance(value, str) and value in aliases:
    warnings.warn(f"`{name}={value!r}` is deprecated and will be removed in the next release: "
                  f"use `{name}={aliases[value]!r}` (the same draws).", DeprecationWarning,
                  stacklevel=_user_stacklevel())
    return aliases[value]
  return value
