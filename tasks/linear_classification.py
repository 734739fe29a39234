"""Synthetic linear binary classification (meta_optimizers_kronecker.txt 3.2, A.1.1)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LinearTask(NamedTuple):
  support_x: jax.Array   # [shot, dim]
  support_y: jax.Array   # [shot] in {0, 1}  (the paper's {-1, 1} as 0/1 targets)
  query_x: jax.Array
  query_y: jax.Array


class TaskPools(NamedTuple):
  train: jax.Array       # [num_train, dim] decision boundaries w
  val: jax.Array
  test: jax.Array


def make_task_pools(key: jax.Array, *, dim: int = 100, num_train: int = 1000,
                    num_val: int = 100, num_test: int = 100) -> TaskPools:
  """Fixed pools of task boundaries ``w ~ N(0, I_dim)``, disjoint by construction."""
  kt, kv, ke = jax.random.split(key, 3)
  return TaskPools(jax.random.normal(kt, (num_train, dim)),
                   jax.random.normal(kv, (num_val, dim)),
                   jax.random.normal(ke, (num_test, dim)))


def sample_linear_task(key: jax.Array, boundary: jax.Array, *, shot: int,
                       query: int) -> LinearTask:
  """Points ``x ~ N(0, I)``, labels ``1[w^T x > 0]`` for the task's boundary ``w``."""
  x = jax.random.normal(key, (shot + query, boundary.shape[-1]))
  y = (x @ boundary > 0).astype(jnp.int32)
  return LinearTask(x[:shot], y[:shot], x[shot:], y[shot:])


def sample_from_pool(key: jax.Array, pool: jax.Array, *, shot: int, query: int) -> LinearTask:
  """Picks a boundary from a fixed pool, then the task's points."""
  kw, kx = jax.random.split(key)
  boundary = pool[jax.random.randint(kw, (), 0, pool.shape[0])]
  return sample_linear_task(kx, boundary, shot=shot, query=query)
