"""The estimator registry: complete, and one test matrix over all of it.

Coverage: every public function with one of the three calling conventions is
registered (and nothing else). The matrix, for every registered estimator:
a typo in each string-valued keyword raises ValueError naming the keyword;
first-order and hypergradient estimators run jitted on bfloat16 parameters
with has_aux, return gradients typed like their parameters, and compile once
for two different keys; every estimator under vmap over keys equals one call
per key; every estimator that takes axis_name gives under shard_map over two
devices what it gives on one.
"""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import smooth_loss

# The calling conventions' leading arguments, as the Protocols declare them.
CONVENTIONS = estimators._types.POSITIONAL
# Public functions with an estimator's leading arguments that are not estimators.
NOT_ESTIMATORS = {"hessian_extreme_eigenvalues"}   # (loss_fn, params, key) -> eigenvalues
REGISTRY = estimators.REGISTRY


def test_every_public_estimator_is_registered_and_nothing_else():
  found = {}
  for name in estimators.__all__:
    fn = getattr(estimators, name)
    if not inspect.isfunction(fn) or name in NOT_ESTIMATORS:
      continue
    params = tuple(inspect.signature(fn).parameters)
    for family, lead in CONVENTIONS.items():
      if params[:len(lead)] == lead:
        found[name] = family
  assert found == {name: spec.family for name, spec in REGISTRY.items()}
  for name, spec in REGISTRY.items():
    assert getattr(estimators, name) is spec.fn and spec.name == name
  for family in CONVENTIONS:
    assert getattr(estimators, family.upper()) == estimators._registry.names(family)


def test_hyperparameters_are_keyword_only_and_the_protocols_match():
  protocols = {"first_order": estimators.FirstOrderEstimator,
               "hypergradient": estimators.HypergradientEstimator,
               "unrolled": estimators.UnrolledEstimator}
  for spec in REGISTRY.values():
    lead = CONVENTIONS[spec.family]
    params = list(inspect.signature(spec.fn).parameters.values())
    assert tuple(p.name for p in params[:len(lead)]) == lead, spec.name
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[len(lead):]), spec.name
    declared = list(inspect.signature(protocols[spec.family].__call__).parameters)[1:]
    assert tuple(declared[:len(lead)]) == lead, spec.family


def test_declared_choices_and_sharding_match_the_signatures():
  for spec in REGISTRY.values():
    params = inspect.signature(spec.fn).parameters
    assert spec.sharded == ("axis_name" in params), spec.name
    for keyword, allowed in spec.choices.items():
      assert params[keyword].default in allowed, (spec.name, keyword)
    assert set(spec.test_kwargs) <= set(params), spec.name


PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.zeros(3)}
HPARAMS = {"l2": jnp.asarray(0.3)}


def _train(p, h):
  return smooth_loss(p) + h["l2"] * sum(jnp.sum(x.astype(jnp.float32) ** 2)
                                        for x in jax.tree_util.tree_leaves(p))


def _call(spec, params, key, **overrides):
  kwargs = {**spec.test_kwargs, **overrides}
  if spec.family == "first_order":
    return spec.fn(smooth_loss, params, key, **kwargs)
  if spec.family == "hypergradient":
    return spec.fn(_train, lambda p, h: smooth_loss(p) * (1.0 + h["l2"]), params, HPARAMS, key,
                   **kwargs)
  unroll = lambda p, inner, k, w: (jnp.sum(p["w"]) ** 2 + inner, inner)
  init_inner = lambda k: jnp.zeros(())
  state = estimators.init_state(spec.fn, init_inner, key, num_particles=2, params=params)
  return spec.fn(unroll, params, state, key, **kwargs)


TYPOS = [(name, keyword) for name, spec in REGISTRY.items() for keyword in spec.choices]


@pytest.mark.parametrize("name,keyword", TYPOS, ids=[f"{n}-{k}" for n, k in TYPOS])
def test_a_typo_in_a_string_choice_names_the_keyword(name, keyword):
  spec = REGISTRY[name]
  typo = inspect.signature(spec.fn).parameters[keyword].default + "x"
  with pytest.raises(ValueError, match=f"`{keyword}`"):
    _call(spec, PARAMS, jax.random.PRNGKey(0), **{keyword: typo})
  with pytest.raises(ValueError, match=f"`{keyword}`"):
    jax.jit(lambda p, k: _call(spec, p, k, **{keyword: typo}))(PARAMS, jax.random.PRNGKey(0))


EAGER_FAMILIES = [name for name, spec in REGISTRY.items() if spec.family != "unrolled"]


@pytest.mark.parametrize("name", EAGER_FAMILIES)
def test_jit_bfloat16_has_aux_and_one_compilation(name):
  spec = REGISTRY[name]
  params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), PARAMS)
  if spec.family == "first_order":
    fn = lambda p, k: spec.fn(lambda q: (smooth_loss(q), q["b"][0]), p, k, has_aux=True,
                              **spec.test_kwargs)
    like = params
  else:
    fn = lambda p, k: spec.fn(_train, lambda q, h: (smooth_loss(q) * (1.0 + h["l2"]), h["l2"]),
                              p, HPARAMS, k, has_aux=True, **spec.test_kwargs)
    like = HPARAMS
  jitted = jax.jit(fn)
  grads, aux = jitted(params, jax.random.PRNGKey(0))
  chex.assert_trees_all_equal_shapes_and_dtypes(grads, like)
  chex.assert_tree_all_finite(grads)
  assert jnp.shape(aux) == ()
  again, _ = jitted(params, jax.random.PRNGKey(1))     # another key: the same program
  chex.assert_trees_all_equal_shapes_and_dtypes(again, like)
  assert jitted._cache_size() == 1


# ----------------------------------------------- vmap and shard_map columns

def _first(out):
  """The gradient of an estimator's result ((grads, state) for the unrolled)."""
  return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(REGISTRY))
def test_vmap_over_keys_equals_one_call_per_key(name):
  spec = REGISTRY[name]
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  mapped = jax.jit(jax.vmap(lambda k: _first(_call(spec, PARAMS, k))))(keys)
  for i, key in enumerate(keys):
    one = jax.jit(lambda k: _first(_call(spec, PARAMS, k)))(key)
    chex.assert_trees_all_close(jax.tree_util.tree_map(lambda x: x[i], mapped), one,
                                rtol=1e-5, atol=1e-6)


SHARDED = [name for name, spec in REGISTRY.items() if spec.sharded]


@pytest.mark.parametrize("name", SHARDED)
def test_shard_map_over_two_devices_equals_one_device(name):
  from jax.sharding import Mesh, PartitionSpec as P
  spec = REGISTRY[name]
  key = jax.random.PRNGKey(5)
  # Members that split evenly over 2 devices (antithetic pairs included).
  even = {"population": 4} if "population" in spec.test_kwargs else {}
  unroll = lambda p, inner, k, w: (jnp.sum(jnp.sin(p["w"])) ** 2 + inner, inner + 0.1)
  init_inner = lambda k: jax.random.uniform(k, ())

  def run(axis_name):
    kwargs = {**spec.test_kwargs, **even, "axis_name": axis_name}
    if spec.family == "first_order":
      return spec.fn(smooth_loss, PARAMS, key, **kwargs)
    state = estimators.init_state(spec.fn, init_inner, key, num_particles=4, params=PARAMS,
                                  axis_name=axis_name)
    return spec.fn(unroll, PARAMS, state, key, **kwargs)[0]

  mesh = Mesh(np.array(jax.devices()[:2]), ("d",))
  sharded = jax.jit(jax.shard_map(lambda: run("d"), mesh=mesh, in_specs=(), out_specs=P()))()
  chex.assert_trees_all_close(sharded, jax.jit(lambda: run(None))(), rtol=1e-5, atol=1e-6)


def test_the_matrix_columns_cover_the_registry():
  assert set(SHARDED) == {n for n, s in REGISTRY.items() if "axis_name" in
                          inspect.signature(s.fn).parameters}
  assert len(SHARDED) >= 9          # 5 first-order + 4 unrolled
