"""metagrad.models: stateless Haiku models (``hk.Transformed``, plain-dict params),
the inner loop of optimisation-based meta-learning and its update rules."""

from . import protonet
from ._conv4 import BatchStatNorm, conv4
from ._optax_rule import optax_rule
from ._inner_loop import AdaptResult, UpdateRule, adapt, meta_sgd, sgd
from ._kronecker import cfc, kfc, klin, meta_curvature
from ._meta_lstm import gradient_descent_params, meta_lstm
from ._mlp import lenet, linear_network, logistic_regression, mlp
from ._turtle import turtle

__all__ = [
    "AdaptResult", "BatchStatNorm", "UpdateRule", "adapt", "cfc", "conv4",
    "gradient_descent_params", "kfc", "klin", "lenet", "linear_network",
    "logistic_regression", "meta_curvature", "meta_lstm", "meta_sgd", "mlp", "optax_rule",
    "protonet", "sgd", "turtle",
]
