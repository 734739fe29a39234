"""Shared test problems and Hypothesis strategies."""

import functools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

FLOAT_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


@st.composite
def pytrees(draw, dtypes=(jnp.float32,), max_leaves=4):
  """Nested dict/list/tuple pytrees of small floating arrays."""
  n = draw(st.integers(1, max_leaves))
  leaves = []
  for i in range(n):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(dtypes))
    values = np.random.default_rng(i + 7 * n).normal(size=shape)
    leaves.append(jnp.asarray(values, dtype))
  structure = draw(st.sampled_from(["dict", "list", "nested", "tuple"]))
  if structure == "dict":
    return {f"w{i}": leaf for i, leaf in enumerate(leaves)}
  if structure == "list":
    return list(leaves)
  if structure == "tuple":
    return tuple(leaves)
  return {"outer": {"inner": leaves[:1], "rest": tuple(leaves[1:])}}


def flat32(tree):
  return ravel_pytree(jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree))[0]


def smooth_loss(tree):
  """A non-quadratic smooth loss on any pytree."""
  v = flat32(tree)
  c = jnp.linspace(0.5, 1.5, v.shape[0])
  return jnp.sum(c * jnp.sin(v) + 0.25 * v**2) + 0.1 * jnp.sum(v) ** 2


class Quadratic:
  """L(x) = 1/2 x^T A x + b^T x on x = {"x": [D]} with known gradient."""

  def __init__(self, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(dim, dim))
    self.a = jnp.asarray(m @ m.T / dim + np.eye(dim), jnp.float32)
    self.b = jnp.asarray(rng.normal(size=dim), jnp.float32)
    self.params = {"x": jnp.asarray(rng.normal(size=dim), jnp.float32)}

  def loss(self, p):
    x = p["x"]
    return 0.5 * x @ self.a @ x + self.b @ x

  def grad(self, p=None):
    p = self.params if p is None else p
    return {"x": self.a @ p["x"] + self.b}


def cosine(a, b):
  a, b = flat32(a), flat32(b)
  return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


def mean_over_keys(estimator, loss, params, num_keys, seed=0):
  """Per-key estimates (stacked, flat) for an unbiasedness test."""
  keys = jax.random.split(jax.random.PRNGKey(seed), num_keys)
  run = jax.jit(jax.vmap(lambda k: flat32(estimator(loss, params, k))))
  return np.asarray(run(keys))


def assert_unbiased(samples, truth, z=5.0):
  """|mean - truth| <= z standard errors in every coordinate.

  The standard error comes from the samples themselves; with z = 5 a correct
  estimator fails with probability < 1e-5 per coordinate, while any wrong
  scale or sign moves the mean by many standard errors (the tests pick sizes
  where the standard error is a small fraction of |truth|).
  """
  samples = np.asarray(samples, np.float64)
  truth = np.asarray(truth, np.float64)
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
  assert np.all(se < 0.1 * np.abs(truth).max()), "test too weak: SE too large"
  np.testing.assert_array_less(np.abs(mean - truth), z * se + 1e-6)
