"""N-way K-shot episodes as a pure, jittable function of a PRNG key."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metagrad import _checks


class Episode(NamedTuple):
  """One N-way K-shot episode (``sample_episode``; with a leading meta-batch
  axis from ``sample_episodes``).

  Attributes:
    support_x: ``[way * shot, H, W, C]`` support images.
    support_y: ``[way * shot]`` int32 labels in ``0 .. way - 1``.
    query_x: ``[way * query, H, W, C]`` query images.
    query_y: ``[way * query]`` int32 labels.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import tasks
    >>> ep = tasks.sample_episode(jax.random.PRNGKey(0), jnp.zeros((20, 10, 28, 28, 1)),
    ...                           way=5, shot=1, query=3)
    >>> ep.support_y.shape, ep.query_x.shape, sorted(ep.support_y.tolist())
    ((5,), (15, 28, 28, 1), [0, 1, 2, 3, 4])
  """
  support_x: jax.Array
  support_y: jax.Array
  query_x: jax.Array
  query_y: jax.Array


def check_episode_args(shape, *, way: int, shot: int, query: int) -> tuple[int, int, int]:
  """ValueError naming the argument when no episode can be drawn; returns
  ``(way, shot, query)`` as Python ints (NumPy/JAX integer scalars accepted).

  Args:
    shape: the images' shape, ``[classes, examples_per_class, H, W, C]``.
    way: classes per episode, to check.
    shot: support examples per class, to check.
    query: query examples per class, to check.

  Returns:
    ``(way, shot, query)`` as Python ints.

  Examples:
    >>> from metagrad import tasks
    >>> tasks.check_episode_args((20, 10, 28, 28, 1), way=5, shot=1, query=3)
    (5, 1, 3)

  References:
    Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching
    Networks for One Shot Learning", arXiv:1606.04080.
  """
  if len(shape) != 5:
    raise ValueError(
        f"`images` must be [classes, examples_per_class, H, W, C] (rank 5), got shape "
        f"{tuple(shape)}.")
  classes, examples = shape[0], shape[1]
  way, shot, query = (_checks.count(n, v) for n, v in (("way", way), ("shot", shot),
                                                        ("query", query)))
  if way > classes:
    raise ValueError(f"`way` ({way}) is larger than the number of classes ({classes}).")
  if shot + query > examples:
    raise ValueError(
        f"`shot` + `query` ({shot} + {query}) exceeds the examples per class ({examples}).")
  return way, shot, query


def sample_episode(key: jax.Array, images: jax.Array, *, way: int, shot: int,
                   query: int) -> Episode:
  """Draws ``way`` distinct classes and ``shot + query`` distinct examples of each.

  Class ``k`` of the episode gets label ``k``; which dataset class that is, and
  the order of examples within the support and query sets, are random. Shapes
  are static, so this jits, vmaps over a meta-batch of keys, and pmaps.

  Args:
    key: PRNG key (same key, same episode).
    images: ``[classes, examples_per_class, H, W, C]`` (a device array).
    way: classes per episode (a static int >= 1).
    shot: support examples per class (a static int >= 1).
    query: query examples per class (a static int >= 1: a query-less episode
      has no loss).

  Returns:
    An ``Episode``: ``[way * shot, H, W, C]`` support and ``[way * query, H, W, C]``
    query images with int32 labels in ``0..way-1``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import tasks
    >>> images = jnp.zeros((20, 10, 28, 28, 1))      # [classes, examples, H, W, C]
    >>> ep = tasks.sample_episode(jax.random.PRNGKey(0), images, way=5, shot=1, query=3)
    >>> ep.support_x.shape, ep.query_y.shape
    ((5, 28, 28, 1), (15,))

  References:
    Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching
    Networks for One Shot Learning", arXiv:1606.04080 (the episodic protocol).
  """
  way, shot, query = check_episode_args(jnp.shape(images), way=way, shot=shot, query=query)
  k_cls, k_ex, k_sup, k_qry = jax.random.split(key, 4)
  classes = jax.random.choice(k_cls, images.shape[0], (way,), replace=False)
  examples = jax.vmap(lambda k: jax.random.permutation(k, images.shape[1])[: shot + query])(
      jax.random.split(k_ex, way))                                   # [way, shot + query]
  picked = images[classes[:, None], examples]                       # [way, s + q, H, W, C]
  labels = jnp.broadcast_to(jnp.arange(way, dtype=jnp.int32)[:, None], (way, shot + query))

  def shuffled(x, y, k):
    order = jax.random.permutation(k, y.shape[0])
    return x[order], y[order]

  feat = images.shape[2:]
  support_x, support_y = shuffled(picked[:, :shot].reshape(-1, *feat),
                                  labels[:, :shot].reshape(-1), k_sup)
  query_x, query_y = shuffled(picked[:, shot:].reshape(-1, *feat),
                              labels[:, shot:].reshape(-1), k_qry)
  return Episode(support_x, support_y, query_x, query_y)


def sample_episodes(key: jax.Array, images: jax.Array, *, num: int, way: int, shot: int,
                    query: int) -> Episode:
  """A meta-batch of ``num`` episodes (leading axis ``num``).

  Args:
    key: PRNG key; episode i uses ``split(key, num)[i]``.
    images: ``[classes, examples_per_class, H, W, C]``.
    num: episodes (>= 1).
    way: as ``sample_episode``.
    shot: as ``sample_episode``.
    query: as ``sample_episode``.

  Returns:
    An ``Episode`` whose arrays have a leading axis ``num``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import tasks
    >>> images = jnp.zeros((20, 10, 28, 28, 1))
    >>> batch = tasks.sample_episodes(jax.random.PRNGKey(0), images, num=4, way=5, shot=1,
    ...                               query=3)
    >>> batch.support_x.shape
    (4, 5, 28, 28, 1)

  References:
    Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching
    Networks for One Shot Learning", arXiv:1606.04080.
  """
  num = _checks.count("num", num)
  way, shot, query = check_episode_args(jnp.shape(images), way=way, shot=shot, query=query)
  return jax.vmap(lambda k: sample_episode(k, images, way=way, shot=shot, query=query))(
      jax.random.split(key, num))
