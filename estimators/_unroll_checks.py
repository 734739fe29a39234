"""Everything about an unrolled estimator's call that can be checked when it is
traced (so under ``jit`` too): the state is this estimator's, the params have
the shape the state was made for, ``init_inner`` is there when the horizon is
finite, and ``unroll`` returns ``(scalar loss, inner state)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import _tree
from ._unroll import UnrollState, _check_init_inner, raw_key, signature


def check_call(name: str, unroll: Callable, params: Any, state: Any, key: Any,
               init_inner: Callable | None) -> jax.Array:
  """Everything about an unrolled estimator's call that can be checked when it
  is traced (so under ``jit`` too); returns the raw key."""
  if not isinstance(state, UnrollState):
    raise ValueError(f"`state` must be an UnrollState from estimators.init_state({name}, ...), "
                     f"got {type(state).__name__}.")
  if state.estimator != name:
    raise ValueError(f"`state` was made by init_state({state.estimator}, ...) and lays its "
                     f"particles out for that estimator; {name} needs its own: "
                     f"estimators.init_state({name}, ...).")
  _checks.float_pytree("params", params)
  if state.params_signature is not None and signature(params) != state.params_signature:
    raise ValueError(f"`params` differ in structure, shape or dtype from the params the state "
                     f"was made for (init_state(..., params=...)): got "
                     f"{_describe(signature(params))}, the state expects "
                     f"{_describe(state.params_signature)}.")
  if state.accumulator is not None:
    size = _tree.flatten(params)[0].shape[0]
    if state.accumulator.ndim != 2 or state.accumulator.shape[1] != size:
      raise ValueError(f"`state`'s PES accumulator has shape {state.accumulator.shape}, but "
                       f"`params` have {size} coordinates: make the state with "
                       f"init_state(pes, ..., params=params).")
  if state.horizon is not None and init_inner is None:
    raise ValueError(f"`init_inner` is required: the state's horizon is finite ("
                     f"{state.horizon}), so particles must start new inner problems when "
                     f"they reach it. Pass init_inner=..., or make the state with "
                     f"num_windows=None for an infinite horizon.")
  if init_inner is not None:
    _check_init_inner(init_inner)
  key = raw_key("key", key)
  _check_unroll(unroll, params, state)
  return key


def _describe(sig) -> str:
  treedef, leaves = sig
  return f"{treedef} with leaves {[f'{d}{list(s)}' for s, d in leaves]}"


def _check_unroll(unroll: Callable, params, state: UnrollState) -> None:
  """``unroll`` returns ``(scalar loss, inner state of the same structure)``."""
  if not callable(unroll):
    raise ValueError(f"`unroll` must be a function (params, inner_state, key, window) -> "
                     f"(loss, inner_state), got {unroll!r}.")
  one = jax.tree_util.tree_map(lambda x: x[0], state.inner)
  out = jax.eval_shape(unroll, params, one, state.episode_key[0], state.window[0])
  if not (isinstance(out, (tuple, list)) and len(out) == 2):
    raise ValueError("`unroll` must return (loss, inner_state), got "
                     f"{jax.tree_util.tree_map(lambda o: (o.shape, o.dtype), out)}.")
  loss, inner = out
  if getattr(loss, "shape", None) != () or not jnp.issubdtype(loss.dtype, jnp.floating):
    raise ValueError(f"`unroll`'s loss must be a floating scalar, got {loss}.")
  if jax.tree_util.tree_structure(inner) != jax.tree_util.tree_structure(one):
    raise ValueError("`unroll` must return an inner state with the structure of the one it "
                     "was given.")
