"""EvoGrad hypergradients.

Bohdal, Yang & Hospedales (2021), "EvoGrad: Efficient Gradient-Based
Meta-Learning and Hyperparameter Optimization", NeurIPS, arXiv:2106.10575,
section 3.2.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from .. import _checks
from . import _noise
from ._backprop import backprop

NOISES = ("normal", "sign")
# Renamed to the vocabulary es/es_wsr use (deprecated for one release).
NOISE_ALIASES = {"gaussian": "normal"}


def _noise_choice(noise):
  return _checks.choice("noise", _checks.renamed_choice("noise", noise, NOISE_ALIASES), NOISES)
# Up to this many members are unrolled in the traced program; more are vmapped.
UNROLL_MAX_POPULATION = 8


def member_noise(key: jax.Array, member, params: Any, *, sigma: float,
                 noise: str = "normal") -> Any:
  """eps_k, shaped like ``params``; leaf ``j`` of member ``k`` uses the key
  ``split(fold_in(key, k))[j]``.

  ``noise="normal"``: ``N(0, sigma^2)`` per entry, i.e. ``sigma`` is the
  standard deviation (the paper writes ``N(0, sigma I)``; its experiments draw
  ``sigma * N(0, 1)``, the convention here). ``noise="sign"``:
  ``sigma * s`` with fair random signs ``s``, taken 32 at a time from the bits
  of uniform 32-bit words, so one threefry draw serves 32 entries instead of
  one (benchmark 4 times EvoGrad with both noises).

  Args:
    key: the EvoGrad call's PRNG key.
    member: k, the member index.
    params: pytree whose shapes and dtypes the noise takes.
    sigma: the noise scale (standard deviation per entry).
    noise: ``"normal"`` or ``"sign"`` (``"gaussian"``: deprecated name of ``"normal"``).

  Returns:
    A pytree shaped and typed like ``params``: member ``member``'s perturbation
    ``eps_k``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> eps = estimators.member_noise(jax.random.PRNGKey(0), 3, {"w": jnp.zeros(4)}, sigma=0.1,
    ...                               noise="sign")
    >>> bool(jnp.all(jnp.abs(eps["w"]) == jnp.float32(0.1)))     # sigma times signs
    True

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575.
  """
  noise = _noise_choice(noise)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.fold_in(key, member), len(leaves))
  out = []
  for k, leaf in zip(keys, leaves):
    shape = jnp.shape(leaf)
    if noise == "sign":
      z = _random_signs(k, shape)
    else:
      z = _noise.normal(k, shape, jnp.float32)
    out.append((sigma * z).astype(jnp.result_type(leaf)))
  return jax.tree_util.tree_unflatten(treedef, out)


def _random_signs(key: jax.Array, shape) -> jax.Array:
  """Independent fair +-1 entries: bit ``b`` of word ``i`` gives entry ``32 i + b``."""
  size = math.prod(shape)
  words = jax.random.bits(key, (-(-size // 32),), jnp.uint32)
  bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)[None, :]) & 1
  return (2.0 * bits.reshape(-1)[:size].astype(jnp.float32) - 1.0).reshape(shape)


def evolutionary_step(train_loss: Callable[[Any, Any], jax.Array], params: Any,
                      hparams: Any, key: jax.Array, *, population: int = 2,
                      sigma: float = 1e-3, temperature: float = 0.05,
                      noise: str = "normal") -> Any:
  """The putative evolutionary inner update theta* of EvoGrad (arXiv:2106.10575) section 3.2:

      theta_k = theta + eps_k,              k = 1..K
      l_k     = train_loss(theta_k, lambda)                          (eq. 3)
      w       = softmax(-l / tau)
      theta*  = sum_k w_k theta_k  (= theta + sum_k w_k eps_k, since sum w = 1)  (eq. 4)

  ``eps_k ~ N(0, sigma^2 I)`` (``noise="normal"``) or ``sigma`` times
  fair random signs (``noise="sign"``, the distribution of
  ``sigma * sign(N(0, I))`` used in the authors' code and section 4.2). theta* is a differentiable function of ``hparams`` through
  the weights ``w`` alone, so ``grad`` of any loss at theta* needs first-order
  derivatives only. Members with a non-finite training loss get weight 0
  (theta* = theta if none is finite). The K perturbations are held at once,
  leaf by leaf (K model copies, as in the paper; K = 2 by default).

  Args:
    train_loss: ``(params, hparams) -> scalar``.
    params: the model's current parameters theta (pytree of floating arrays).
    hparams: the hyperparameters lambda (pytree of floating arrays).
    key: PRNG key; member ``k``'s noise comes from ``fold_in(key, k)``.
    population: K, the number of perturbed copies (>= 2).
    sigma: noise scale (standard deviation per entry, > 0).
    temperature: tau of the softmax (> 0).
    noise: ``"normal"`` or ``"sign"`` (``"gaussian"``: deprecated name of ``"normal"``).

  Returns:
    theta*, a pytree shaped and typed like ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> train = lambda p, h: jnp.sum((p["w"] - h["c"]) ** 2)
    >>> step = estimators.evolutionary_step(train, {"w": jnp.zeros(2)}, {"c": jnp.ones(2)},
    ...                                     jax.random.PRNGKey(0), population=2, sigma=0.1)
    >>> step["w"].shape
    (2,)

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575.
  """
  _checks.prng_key("key", key)
  _checks.positive("sigma", sigma)
  _checks.positive("temperature", temperature)
  population = _checks.population(population, antithetic=False)
  noise = _noise_choice(noise)
  _checks.bilevel(train_loss, params, hparams)
  loss_at = lambda e: jnp.asarray(
      train_loss(jax.tree_util.tree_map(jnp.add, params, e), hparams), jnp.float32)
  draw = lambda k: member_noise(key, k, params, sigma=sigma, noise=noise)
  if population <= UNROLL_MAX_POPULATION:
    # Small K (2 in the paper): members written out one by one. A vmap turns
    # each member's matmuls and convolutions into batched ones over K weight
    # sets, which was 2.3x slower and 1.7x heavier on a 1.2M-parameter MLP and
    # 2x slower on a ResNet (CPU, benchmarks/evograd_vs_t1t2.py).
    eps = [draw(k) for k in range(population)]
    weights = _fitness_weights(jnp.stack([loss_at(e) for e in eps]), temperature)
    return jax.tree_util.tree_map(
        lambda p, *es: p + sum(w.astype(e.dtype) * e for w, e in zip(weights, es)),
        params, *eps)
  # Large K: one vmapped member keeps compile time flat in K.
  eps = jax.vmap(draw)(jnp.arange(population))
  weights = _fitness_weights(jax.vmap(loss_at)(eps), temperature)
  return jax.tree_util.tree_map(
      lambda p, e: p + jnp.tensordot(weights.astype(e.dtype), e, axes=1), params, eps)


def _fitness_weights(losses: jax.Array, temperature) -> jax.Array:
  """softmax(-losses / tau) over the finite losses (eq. 3); 0 for the others
  (NaN for all if none is finite)."""
  finite = jnp.isfinite(losses)
  logits = jnp.where(finite, -losses / temperature, -jnp.inf)
  # No finite candidate: NaN weights, so the hypergradient is NaN, not a silent zero.
  return jnp.where(finite.any(), jax.nn.softmax(jnp.where(finite.any(), logits, 0.0)), jnp.nan)


def evograd(train_loss: Callable[[Any, Any], jax.Array],
            val_loss: Callable[[Any, Any], Any], params: Any,
            hparams: Any, key: jax.Array, *, population: int = 2,
            sigma: float = 1e-3, temperature: float = 0.05,
            noise: str = "normal", has_aux: bool = False) -> Any:
  """EvoGrad hypergradient ``d val_loss(theta*(lambda), lambda) / d lambda``.

  EvoGrad's Table 1 (right column): reverse mode through
  ``evolutionary_step`` only, no second-order terms and no longer graph
  than one forward pass of K candidates. Defaults follow section 4.2
  (K = 2, tau = 0.05, sigma = 1e-3).

  **Scale.** For small sigma, ``E[theta*] ~ theta - eta g`` with
  ``g = d train_loss / d theta`` and ``eta = sigma^2 (K - 1) / (K tau)``, so the
  mean EvoGrad hypergradient is the ``t1_t2`` hypergradient with
  ``inner_lr = eta`` (2e-5 at the defaults): tiny per draw, and noisy (one
  K = 2 draw's signal-to-noise ratio can be well below 1). Use Adam (scale-free)
  or a hyper-learning rate about ``1/eta`` times a T1-T2 one, and average
  several keys or raise K for less noise.

  Args:
    train_loss: ``(params, hparams) -> scalar``, the loss the model trains on.
    val_loss: ``(params, hparams) -> scalar`` (``-> (scalar, aux)`` with
      ``has_aux``), evaluated at theta*.
    params: theta, the model's current parameters (pytree of floats).
    hparams: lambda, the hyperparameters (pytree of floats).
    key: PRNG key (member k's noise from ``fold_in(key, k)``).
    population: K model copies (>= 2).
    sigma: noise scale, the standard deviation per entry (> 0).
    temperature: tau (> 0).
    noise: ``"normal"`` or ``"sign"`` (``"gaussian"``: deprecated name of ``"normal"``) (sigma times fair random signs).
    has_aux: ``val_loss`` returns ``(loss, aux)``; the result is
      ``(hypergrads, aux)`` with ``aux`` at theta*.

  Returns:
    A pytree shaped and typed like ``hparams``; with ``has_aux``,
    ``(hypergrads, aux)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> train = lambda p, h: jnp.sum((p["w"] - 1.0) ** 2) + h["l2"] * jnp.sum(p["w"] ** 2)
    >>> val = lambda p, h: jnp.sum((p["w"] - 2.0) ** 2)
    >>> g = estimators.evograd(train, val, {"w": jnp.ones(2)}, {"l2": jnp.array(0.1)},
    ...                        jax.random.PRNGKey(0), population=2, sigma=1e-3)
    >>> g["l2"].shape
    ()

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575.
  """
  _checks.bilevel(train_loss, params, hparams, val_loss, has_aux)
  objective = evolutionary_objective(
      train_loss, val_loss, params, key, population=population, sigma=sigma,
      temperature=temperature, noise=noise)
  return backprop(objective, hparams, has_aux=has_aux)


def evolutionary_objective(train_loss: Callable[[Any, Any], jax.Array],
                           val_loss: Callable[[Any, Any], jax.Array],
                           params: Any, key: jax.Array,
                           **step_kwargs) -> Callable[[Any], jax.Array]:
  """``hparams -> val_loss(evolutionary_step(...), hparams)``.

  The bilevel objective EvoGrad differentiates, as a plain ``loss_fn`` so that
  any first-order estimator of this package (``es``, ``forward_mode``,
  ``finite_difference``, ...) can be applied to it as well.

  Args:
    train_loss: ``(params, hparams) -> scalar``, the loss the members step on.
    val_loss: ``(params, hparams) -> scalar``, evaluated at the members' step.
    params: theta, the model's current parameters.
    key: PRNG key of the evolutionary step.
    **step_kwargs: ``population``, ``sigma``, ``temperature``, ``noise`` of
      ``evolutionary_step``.

  Returns:
    ``hparams -> scalar``: the validation loss at EvoGrad's evolutionary step, a
    first-order estimator's ``loss_fn``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import estimators
    >>> train = lambda p, h: jnp.sum((p["w"] - h["c"]) ** 2)
    >>> val = lambda p, h: jnp.sum((p["w"] - 2.0) ** 2)
    >>> objective = estimators.evolutionary_objective(train, val, {"w": jnp.zeros(2)},
    ...                                               jax.random.PRNGKey(0), population=2)
    >>> jax.grad(objective)({"c": jnp.ones(2)})["c"].shape
    (2,)

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575.
  """
  def objective(hparams):
    theta_star = evolutionary_step(train_loss, params, hparams, key,
                                   **step_kwargs)
    return val_loss(theta_star, hparams)
  return objective
