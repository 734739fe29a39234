"""One registry of metagrad's estimators: the single list everything else
derives from (``FIRST_ORDER``/``HYPERGRADIENT``/``UNROLLED``, the unrolled
layouts' coverage, the test matrix in ``tests/test_registry.py``).

Adding an estimator: one entry here. A coverage test fails when a public
function with one of the three calling conventions is missing.
"""

from __future__ import annotations

import types
from typing import Any, Callable, Mapping, NamedTuple

from . import _antithetic, _noise, _particles, _types
from ._backprop import backprop
from ._es import SHAPINGS, es
from ._es_wsr import es_wsr
from ._evograd import NOISES as EVOGRAD_NOISES, evograd
from ._finite_difference import SCHEMES, finite_difference
from ._forward_gradient import forward_gradient
from ._forward_mode import forward_mode
from ._implicit import SOLVERS, implicit
from ._noise_reuse_es import noise_reuse_es
from ._pes import pes
from ._t1_t2 import t1_t2
from ._truncated_backprop import truncated_backprop
from ._truncated_es import truncated_es

FAMILIES = tuple(_types.POSITIONAL)


class EstimatorSpec(NamedTuple):
  """What the library and its tests know about one estimator.

  Attributes:
    name: the public name (``metagrad.estimators.<name>``).
    fn: the estimator.
    family: ``"first_order"`` (``(loss_fn, params, key) -> grads``),
      ``"hypergradient"`` (``(train_loss, val_loss, params, hparams, key)
      -> hypergrads``) or ``"unrolled"`` (``(unroll, params, state, key) ->
      (grads, state)``).
    test_kwargs: small keyword settings under which it runs in milliseconds
      on a toy problem (the test matrix's defaults).
    choices: each string-valued keyword it validates, with its allowed values.
    sharded: whether it takes ``axis_name`` to split its members over devices.

  Examples:
    >>> from metagrad import estimators
    >>> spec = estimators.REGISTRY["es_wsr"]
    >>> spec.fn is estimators.es_wsr, spec.family, spec.sharded, spec.choices["noise"]
    (True, 'first_order', True, ('normal', 'table'))
  """
  name: str
  fn: _types.FirstOrderEstimator | _types.HypergradientEstimator | _types.UnrolledEstimator
  family: str
  test_kwargs: Mapping[str, Any]
  choices: Mapping[str, tuple[str, ...]]
  sharded: bool


def _spec(fn, family, test_kwargs=None, choices=None, sharded=True) -> EstimatorSpec:
  return EstimatorSpec(fn.__name__, fn, family, types.MappingProxyType(dict(test_kwargs or {})),
                       types.MappingProxyType(dict(choices or {})), sharded)


REGISTRY: Mapping[str, EstimatorSpec] = types.MappingProxyType({s.name: s for s in (
    _spec(backprop, "first_order", sharded=False),
    _spec(forward_mode, "first_order", {"chunk_size": 4}),
    _spec(forward_gradient, "first_order", {"population": 3}),
    _spec(es, "first_order", {"sigma": 0.1, "population": 4},
          {"shaping": SHAPINGS, "noise": _noise.NOISES}),
    _spec(es_wsr, "first_order", {"population": 4}, {"noise": _noise.NOISES}),
    _spec(finite_difference, "first_order", {"step": 0.05}, {"scheme": SCHEMES}),
    _spec(evograd, "hypergradient", {"population": 3, "sigma": 0.05},
          {"noise": EVOGRAD_NOISES}, sharded=False),
    _spec(t1_t2, "hypergradient", {"inner_lr": 0.1}, sharded=False),
    _spec(implicit, "hypergradient", {"num_iterations": 5}, {"solver": SOLVERS},
          sharded=False),
    _spec(truncated_backprop, "unrolled"),
    _spec(truncated_es, "unrolled", {"sigma": 0.05}, {"carry": _antithetic.CARRIES}),
    _spec(pes, "unrolled", {"sigma": 0.05}),
    _spec(noise_reuse_es, "unrolled", {"sigma": 0.05}),
)})


def names(family: str) -> tuple[str, ...]:
  """The registered estimators of one family, in registration order."""
  if family not in FAMILIES:
    raise ValueError(f"`family` must be one of {FAMILIES}, got {family!r}.")
  return tuple(name for name, spec in REGISTRY.items() if spec.family == family)


# Every unrolled estimator declares its particle layout in _particles, which
# cannot import the estimators (they import it); checked here, at import.
if set(names("unrolled")) != set(_particles.LAYOUTS):
  raise ImportError(f"unrolled estimators {names('unrolled')} and particle layouts "
                    f"{sorted(_particles.LAYOUTS)} differ")
