"""metagrad.estimators: gradient and hypergradient estimators, one calling convention.

First-order estimators: ``estimator(loss_fn, params, key, **hyperparameters)
-> grads`` with ``grads`` shaped like ``params``. Bind hyperparameters with
``functools.partial`` to get the uniform ``(loss_fn, params, key)`` shape.

Hypergradient estimators: ``estimator(train_loss, val_loss, params, hparams,
key, **hyperparameters) -> hypergrads`` shaped like ``hparams``.

Unrolled estimators (truncation windows of a long inner loop): ``estimator(
unroll, params, state, key, **hyperparameters) -> (grads, state)`` with
``state = init_state(estimator, init_inner, key, num_particles=...)`` and
``unroll(params, inner_state, key, window) -> (loss, inner_state)``.
"""

from ._backprop import backprop
from ._curvature import Extremes, hessian_extreme_eigenvalues
from ._es import es
from ._es_wsr import es_wsr
from ._evograd import evograd, evolutionary_objective, evolutionary_step, member_noise
from ._finite_difference import finite_difference
from ._forward_gradient import forward_gradient
from ._forward_mode import forward_mode
from ._implicit import ImamlInfo, imaml, implicit, proximal
from ._noise_reuse_es import noise_reuse_es
from ._pes import pes
from ._t1_t2 import t1_t2
from ._truncated_backprop import truncated_backprop
from ._truncated_es import truncated_es
from ._auto_chunk import ChunkPlan
from ._perturbation import PopulationInfo
from ._registry import REGISTRY, EstimatorSpec, names as _names
from ._types import FirstOrderEstimator, HypergradientEstimator, UnrolledEstimator
from ._full_unroll import full_unroll
from ._horizon import FixedHorizon, RandomHorizon
from ._unroll import UnrollState, init_state

# Derived from the one registry (estimators/_registry.py).
FIRST_ORDER = _names("first_order")
HYPERGRADIENT = _names("hypergradient")
UNROLLED = _names("unrolled")

__all__ = [
    "backprop", "es", "es_wsr", "evograd", "evolutionary_objective",
    "evolutionary_step", "finite_difference", "member_noise", "forward_gradient",
    "forward_mode", "imaml", "implicit", "proximal", "t1_t2",
    "truncated_backprop", "truncated_es", "pes", "noise_reuse_es", "init_state", "full_unroll",
    "UnrollState", "FixedHorizon", "RandomHorizon", "PopulationInfo", "ChunkPlan", "FIRST_ORDER", "HYPERGRADIENT", "UNROLLED", "Extremes",
    "REGISTRY", "EstimatorSpec", "ImamlInfo", "FirstOrderEstimator", "HypergradientEstimator",
    "UnrolledEstimator",
    "hessian_extreme_eigenvalues",
]
