"""metagrad.models: stateless Haiku models (``hk.Transformed``, plain-dict params)."""

from . import protonet
from .conv4 import BatchStatNorm, conv4
from .mlp import lenet, linear_network, logistic_regression, mlp

__all__ = ["BatchStatNorm", "conv4", "lenet", "linear_network", "logistic_regression",
           "mlp", "protonet"]
