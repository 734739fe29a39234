"""The calling convention every estimator shares, and bad-input errors."""

import functools

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import FLOAT_DTYPES, pytrees, smooth_loss

def _at_test_settings(family):
  """The registry's estimators of one family, bound to their test settings."""
  return {name: functools.partial(estimators.REGISTRY[name].fn,
                                  **estimators.REGISTRY[name].test_kwargs)
          for name in getattr(estimators, family.upper())}


FIRST_ORDER = _at_test_settings("first_order")


def test_public_api():
  for name in estimators.__all__:
    assert getattr(estimators, name) is not None


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
# 6 drawn structures, not the profile's 12: each is a fresh compile, and the
# registry matrix (test_registry.py) covers bfloat16, has_aux and nesting too.
@hypothesis.settings(max_examples=6)
@hypothesis.given(params=pytrees(dtypes=FLOAT_DTYPES))
def test_grads_have_structure_shapes_and_dtypes_of_params(name, params):
  # Jitted: one program per drawn structure instead of one per eager op
  # (FD: 12 s -> 3 s for the 12 structures); eager calls are covered below.
  grads = jax.jit(lambda p, k: FIRST_ORDER[name](smooth_loss, p, k))(params,
                                                                      jax.random.PRNGKey(0))
  chex.assert_trees_all_equal_shapes_and_dtypes(grads, params)
  chex.assert_tree_all_finite(grads)


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
def test_jit_vmap_and_same_key(name):
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
  est = FIRST_ORDER[name]
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  batched = jax.jit(jax.vmap(lambda k: est(smooth_loss, params, k)))(keys)
  for i in range(3):
    single = est(smooth_loss, params, keys[i])
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], batched), single,
                                rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_equal(est(smooth_loss, params, keys[0]), est(smooth_loss, params, keys[0]))


BAD_INPUTS = [
    ("es", dict(sigma=0.0, population=4), "sigma"),
    ("es", dict(sigma=-1.0, population=4), "sigma"),
    ("es", dict(sigma=float("nan"), population=4), "sigma"),
    ("es", dict(sigma=0.1, population=1), "population"),
    ("es", dict(sigma=0.1, population=5), "population"),  # odd with antithetic
    ("es", dict(sigma=0.1, population=4.0), "population"),
    ("es", dict(sigma=0.1, population=4, chunk_size=0), "chunk_size"),
    ("es", dict(sigma=0.1, population=4, shaping="rank"), "shaping"),
    ("es_wsr", dict(sigma=0.0), "sigma"),
    ("es_wsr", dict(population=1), "population"),
    ("es_wsr", dict(population=5, antithetic=True), "population"),
    ("es_wsr", dict(chunk_size=-2), "chunk_size"),
    ("es_wsr", dict(chunk_size="big"), "chunk_size"),
    ("finite_difference", dict(step=0.0), "step"),
    ("finite_difference", dict(step=-1e-3), "step"),
    ("finite_difference", dict(chunk_size=0), "chunk_size"),
    ("forward_mode", dict(chunk_size=0), "chunk_size"),
    ("forward_mode", dict(chunk_size="all"), "chunk_size"),
    ("forward_gradient", dict(population=0), "population"),
]


@pytest.mark.parametrize("name,kwargs,arg", BAD_INPUTS)
def test_bad_hyperparameter_names_the_argument(name, kwargs, arg):
  fn = getattr(estimators, name)
  with pytest.raises(ValueError, match=arg):
    fn(smooth_loss, {"x": jnp.ones(3)}, jax.random.PRNGKey(0), **kwargs)


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
def test_non_scalar_loss_and_integer_leaves(name):
  est = FIRST_ORDER[name]
  with pytest.raises(ValueError, match="loss_fn"):
    est(lambda p: p["x"] * 2.0, {"x": jnp.ones(3)}, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="params"):
    est(lambda p: p["x"].sum() * 1.0, {"x": jnp.arange(3)}, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="params"):
    est(lambda p: jnp.float32(0.0), {}, jax.random.PRNGKey(0))


def test_traced_sigma_is_accepted():
  params = {"x": jnp.ones(3)}
  g = jax.jit(lambda s: estimators.es(smooth_loss, params, jax.random.PRNGKey(0),
                                      sigma=s, population=4))(0.1)
  ref = estimators.es(smooth_loss, params, jax.random.PRNGKey(0), sigma=0.1, population=4)
  chex.assert_trees_all_close(g, ref, rtol=1e-4, atol=1e-5)  # jit vs eager rounding


HYPERGRADIENT = _at_test_settings("hypergradient")


@pytest.mark.parametrize("name", sorted(FIRST_ORDER) + sorted(HYPERGRADIENT))
def test_has_aux_returns_the_same_gradient_and_its_aux(name):
  # Every estimator's has_aux path: (grads, aux) with grads bit-equal to the
  # plain call's.
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
  key = jax.random.PRNGKey(3)
  marker = lambda p: {"b0": p["b"][0], "n": jnp.asarray(7)}
  if name in FIRST_ORDER:
    est = FIRST_ORDER[name]
    plain = est(smooth_loss, params, key)
    grads, aux = est(lambda p: (smooth_loss(p), marker(p)), params, key, has_aux=True)
  else:
    est, hparams = HYPERGRADIENT[name], {"l2": jnp.asarray(0.3)}
    train = lambda p, h: smooth_loss(p) + h["l2"] * sum(jnp.sum(x ** 2) for x in
                                                       jax.tree_util.tree_leaves(p))
    val = lambda p, h: smooth_loss(p) * (1.0 + h["l2"])
    plain = est(train, val, params, hparams, key)
    grads, aux = est(train, lambda p, h: (val(p, h), marker(p)), params, hparams, key,
                     has_aux=True)
  chex.assert_trees_all_equal(grads, plain)
  assert int(aux["n"]) == 7, aux
  # First-order aux is at params; a hypergradient's val_loss aux is where its
  # val_loss is evaluated (theta' for evograd and t1_t2, theta for implicit).
  if name in FIRST_ORDER or name == "implicit":
    assert float(aux["b0"]) == float(params["b"][0]), aux
