"""Synthetic linear binary classification ("Decoupling Adaptation from Modeling with
Meta-Optimizers for Meta Learning", 3.2 and A.1.1).

A task is a decision boundary ``w ~ N(0, I_dim)`` through the origin; a point
``x`` gets label ``1[w^T x > 0]`` (the paper's {-1, 1} as 0/1 targets). A.1.1's
"each one of the 1,000 data points x ~ N(0, I_100)" admits two readings, both
supported here:

* **per task** (``points=None``): every task draws fresh points;
* **shared**: one fixed set of points serves every task (tasks differ only in
  ``w``), split into the same support and query points for each task.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metagrad import _checks


class LinearTask(NamedTuple):
  """One linear classification task (``sample_linear_task``,
  ``sample_from_pool``).

  Attributes:
    support_x: ``[shot, dim]`` inputs.
    support_y: ``[shot]`` int32 labels ``1[w^T x > 0]``.
    query_x: ``[query, dim]`` inputs.
    query_y: ``[query]`` int32 labels.
    boundary: ``[dim]``, the task's ``w`` (ground truth, for analysis).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import tasks
    >>> task = tasks.sample_linear_task(jax.random.PRNGKey(0), jnp.ones(3), shot=4, query=2)
    >>> bool(jnp.all(task.support_y == (task.support_x @ task.boundary > 0)))
    True
  """
  support_x: jax.Array
  support_y: jax.Array
  query_x: jax.Array
  query_y: jax.Array
  boundary: jax.Array


class TaskPools(NamedTuple):
  """Disjoint pools of task boundaries (``make_task_pools``).

  Attributes:
    train: ``[num_train, dim]`` decision boundaries ``w`` for meta-training.
    val: ``[num_val, dim]`` boundaries for validation.
    test: ``[num_test, dim]`` boundaries for the reported accuracy.

  Examples:
    >>> import jax
    >>> from metagrad import tasks
    >>> pools = tasks.make_task_pools(jax.random.PRNGKey(0), dim=5, num_train=6, num_val=2,
    ...                               num_test=2)
    >>> task = tasks.sample_from_pool(jax.random.PRNGKey(1), pools.test, shot=3, query=3)
    >>> task.boundary.shape
    (5,)
  """
  train: jax.Array
  val: jax.Array
  test: jax.Array


def make_task_pools(key: jax.Array, *, dim: int = 100, num_train: int = 1000,
                    num_val: int = 100, num_test: int = 100) -> TaskPools:
  """Fixed pools of task boundaries ``w ~ N(0, I_dim)``, disjoint by construction.

  Args:
    key: PRNG key (same key, same pools).
    dim: input dimension (>= 1).
    num_train: boundaries in the training pool (>= 1).
    num_val: boundaries in the validation pool (>= 1).
    num_test: boundaries in the test pool (>= 1).

  Returns:
    ``TaskPools(train, val, test)``: ``[num_train, dim]``, ``[num_val, dim]`` and
    ``[num_test, dim]`` boundaries.

  Examples:
    >>> import jax
    >>> from metagrad import tasks
    >>> pools = tasks.make_task_pools(jax.random.PRNGKey(0), dim=8, num_train=10, num_val=2,
    ...                               num_test=3)
    >>> pools.train.shape, pools.test.shape
    ((10, 8), (3, 8))

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603, section 3 and A.1.1.
  """
  dim = _checks.count("dim", dim)
  sizes = [_checks.count(n, v) for n, v in (("num_train", num_train), ("num_val", num_val),
                                             ("num_test", num_test))]
  kt, kv, ke = jax.random.split(key, 3)
  return TaskPools(*(jax.random.normal(k, (n, dim)) for k, n in zip((kt, kv, ke), sizes)))


def shared_points(key: jax.Array, *, num: int = 1000, dim: int = 100) -> jax.Array:
  """The fixed ``[num, dim]`` points ``x ~ N(0, I)`` of the shared reading.

  Args:
    key: PRNG key.
    num: points (>= 1).
    dim: their dimension (>= 1).

  Returns:
    ``[num, dim]`` float32 points.

  Examples:
    >>> import jax
    >>> from metagrad import tasks
    >>> tasks.shared_points(jax.random.PRNGKey(0), num=50, dim=8).shape
    (50, 8)

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603, section 3 and A.1.1.
  """
  return jax.random.normal(key, (_checks.count("num", num), _checks.count("dim", dim)))


def _labelled(x: jax.Array, boundary: jax.Array, shot: int) -> LinearTask:
  y = (x @ boundary > 0).astype(jnp.int32)
  return LinearTask(x[:shot], y[:shot], x[shot:], y[shot:], boundary)


def sample_linear_task(key: jax.Array, boundary: jax.Array, *, shot: int, query: int,
                       points: jax.Array | None = None) -> LinearTask:
  """Labels ``1[w^T x > 0]`` for the task's boundary ``w`` (``boundary``, ``[dim]``).

  Args:
    key: PRNG key for fresh points (unused with ``points``).
    boundary: the task's ``w``.
    shot: support points (>= 1).
    query: query points (>= 1).
    points: ``None`` draws fresh ``x ~ N(0, I)``; a fixed ``[n, dim]`` array
      uses its first ``shot`` rows as support and the next ``query`` as query.

  Returns:
    A ``LinearTask`` with ``[shot, dim]`` / ``[query, dim]`` inputs, 0/1 int32
    labels and the boundary.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import tasks
    >>> task = tasks.sample_linear_task(jax.random.PRNGKey(0), jnp.ones(8), shot=4, query=6)
    >>> task.support_x.shape, task.query_y.shape
    ((4, 8), (6,))

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603, section 3 and A.1.1.
  """
  shot, query = _checks.count("shot", shot), _checks.count("query", query)
  _checks.rank("boundary", boundary, 1)
  if points is None:
    return _labelled(jax.random.normal(key, (shot + query, boundary.shape[-1])), boundary, shot)
  _checks.rank("points", points, 2)
  if points.shape[1] != boundary.shape[0]:
    raise ValueError(f"`points` have dimension {points.shape[1]}, `boundary` {boundary.shape[0]}.")
  if shot + query > points.shape[0]:
    raise ValueError(f"`shot` + `query` ({shot} + {query}) exceeds the {points.shape[0]} "
                     f"shared `points`.")
  return _labelled(points[:shot + query], boundary, shot)


def sample_from_pool(key: jax.Array, pool: jax.Array, *, shot: int, query: int,
                     points: jax.Array | None = None) -> LinearTask:
  """Picks a boundary from a fixed pool (``[num, dim]``), then the task's points
  (fresh, or the fixed ``points``; see ``sample_linear_task``).

  Args:
    key: PRNG key (boundary and points).
    pool: ``[num, dim]`` boundaries (from ``make_task_pools``).
    shot: support points (>= 1).
    query: query points (>= 1).
    points: ``None`` or the shared ``[n, dim]`` points.

  Returns:
    A ``LinearTask`` for a boundary drawn uniformly from ``pool``.

  Examples:
    >>> import jax
    >>> from metagrad import tasks
    >>> pools = tasks.make_task_pools(jax.random.PRNGKey(0), dim=8, num_train=10)
    >>> task = tasks.sample_from_pool(jax.random.PRNGKey(1), pools.train, shot=4, query=6)
    >>> task.boundary.shape
    (8,)

  References:
    Arnold, Iqbal & Sha 2019, "Decoupling Adaptation from Modeling with
    Meta-Optimizers for Meta Learning", arXiv:1910.13603, section 3 and A.1.1.
  """
  _checks.rank("pool", pool, 2)
  if pool.shape[0] < 1:
    raise ValueError("`pool` is empty: it holds no boundaries to sample.")
  kw, kx = jax.random.split(key)
  boundary = pool[jax.random.randint(kw, (), 0, pool.shape[0])]
  return sample_linear_task(kx, boundary, shot=shot, query=query, points=points)
