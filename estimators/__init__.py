"""metagrad.estimators: gradient and hypergradient estimators, one calling convention.

First-order estimators: ``estimator(loss_fn, params, key, **hyperparameters)
-> grads`` with ``grads`` shaped like ``params``. Bind hyperparameters with
``functools.partial`` to get the uniform ``(loss_fn, params, key)`` shape.

Hypergradient estimators: ``estimator(train_loss, val_loss, params, hparams,
key, **hyperparameters) -> hypergrads`` shaped like ``hparams``.
"""

from .backprop import backprop
from .es import es
from .es_wsr import es_wsr
from .evograd import evograd, evolutionary_objective, evolutionary_step, member_noise
from .finite_difference import finite_difference
from .forward_gradient import forward_gradient
from .forward_mode import forward_mode
from .t1_t2 import t1_t2

FIRST_ORDER = ("backprop", "forward_mode", "forward_gradient", "es", "es_wsr",
               "finite_difference")
HYPERGRADIENT = ("evograd", "t1_t2")

__all__ = [
    "backprop", "es", "es_wsr", "evograd", "evolutionary_objective",
    "evolutionary_step", "finite_difference", "member_noise", "forward_gradient",
    "forward_mode", "t1_t2", "FIRST_ORDER", "HYPERGRADIENT",
]
