"""Prototypical-network pieces (Snell, Swersky & Zemel 2017, "Prototypical
Networks for Few-shot Learning"; ES-ProtoNet eq. 1-3).

Labels must lie in ``0 .. num_classes - 1``. Shapes are checked always; label
values are checked whenever they are concrete (eager code, or arrays passed
in before ``jit``). Inside ``jit`` they are traced and cannot be inspected: call
``check_labels`` in your step and wrap it with
``jax.experimental.checkify.checkify`` to check them there too:

    from jax.experimental import checkify
    def step(params, episode):
      protonet.check_labels(episode.support_y, way)     # a checkify check when traced
      ...
    err, out = jax.jit(checkify.checkify(step))(params, episode); err.throw()
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import checkify

from metagrad import _checks

DISTANCES = ("euclidean", "cosine")

__all__ = ["check_labels", "prototypes", "logits", "loss", "accuracy", "episode_loss"]


def check_labels(labels: jax.Array, num_classes: int, name: str = "labels") -> None:
  """Integer ``labels`` in ``0 .. num_classes - 1``: a ValueError when
  concrete, a ``checkify`` check (active under ``checkify.checkify``) when traced.

  Args:
    labels: integer class indices.
    num_classes: K.
    name: the argument name used in the error.

  Returns:
    None; raises ``ValueError`` naming ``name`` when concrete labels are not
    integers in range (traced labels: a ``checkify`` error instead).

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad.models import protonet
    >>> protonet.check_labels(jnp.array([0, 1, 2]), 3)
    >>> protonet.check_labels(jnp.array([0, 3]), 3, name="support_y")
    Traceback (most recent call last):
    ...
    ValueError: `support_y` must lie in 0..2, got values from 0 to 3.

  References:
    Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot
    Learning", arXiv:1703.05175, section 2.1.
  """
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"`{name}` must be integer class indices, got dtype "
                     f"{jnp.result_type(labels)}.")
  if isinstance(labels, jax.core.Tracer):
    checkify.check(jnp.all((labels >= 0) & (labels < num_classes)),
                   f"`{name}` outside 0..{num_classes - 1}")
    return
  values = np.asarray(labels)
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise ValueError(f"`{name}` must lie in 0..{num_classes - 1}, got values from "
                     f"{values.min()} to {values.max()}.")


def _check_concrete_labels(labels, num_classes, name):
  """The dtype always; the values only when concrete (a traced check needs
  checkify's wrapper, see ``check_labels``)."""
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f"`{name}` must be integer class indices, got dtype "
                     f"{jnp.result_type(labels)}.")
  if not isinstance(labels, jax.core.Tracer):
    check_labels(labels, num_classes, name)


def prototypes(embeddings: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Class means ``c_k = 1/|S_k| sum_{i in S_k} f(x_i)`` (eq. 1).

  Args:
    embeddings: ``[N, E]`` support embeddings.
    labels: ``[N]`` integer labels in ``0 .. num_classes - 1``.
    num_classes: K (a static int); a class with no support example gets a
      zero prototype.

  Returns:
    ``[K, E]`` prototypes, typed like ``embeddings``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad.models import protonet
    >>> emb = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    >>> protonet.prototypes(emb, jnp.array([0, 0, 1]), 2).tolist()
    [[1.0, 0.0], [0.0, 4.0]]

  References:
    Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot
    Learning", arXiv:1703.05175, eq. (1).
  """
  num_classes = _checks.count("num_classes", num_classes)
  _checks.rank("embeddings", embeddings, 2)
  _checks.rank("labels", labels, 1)
  if labels.shape[0] != embeddings.shape[0]:
    raise ValueError(f"`labels` ({labels.shape[0]}) and `embeddings` ({embeddings.shape[0]}) "
                     f"must have one entry per support example.")
  _check_concrete_labels(labels, num_classes, "labels")
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=embeddings.dtype)   # [N, K]
  counts = one_hot.sum(0)[:, None]
  return (one_hot.T @ embeddings) / jnp.maximum(counts, 1)


def logits(queries: jax.Array, protos: jax.Array, distance: str = "euclidean") -> jax.Array:
  """``-||f(x) - c_k||^2`` (eq. 2) or cosine similarity, ``[queries, classes]``.

  Args:
    queries: ``[Q, E]`` query embeddings.
    protos: ``[K, E]`` prototypes.
    distance: ``"euclidean"`` or ``"cosine"``.

  Returns:
    ``[Q, K]`` logits: negative squared distances, or cosine similarities.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad.models import protonet
    >>> protos = jnp.array([[1.0, 0.0], [0.0, 4.0]])
    >>> protonet.logits(jnp.array([[1.0, 1.0]]), protos).tolist()
    [[-1.0, -10.0]]

  References:
    Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot
    Learning", arXiv:1703.05175, eq. (2).
  """
  _checks.choice("distance", distance, DISTANCES)
  _checks.rank("queries", queries, 2)
  _checks.rank("protos", protos, 2)
  if queries.shape[1] != protos.shape[1]:
    raise ValueError(f"`queries` ({queries.shape[1]}) and `protos` ({protos.shape[1]}) must "
                     f"have the same embedding size.")
  if distance == "euclidean":
    sq = (jnp.sum(queries**2, -1, keepdims=True) - 2 * queries @ protos.T
          + jnp.sum(protos**2, -1)[None, :])
    return -jnp.maximum(sq, 0.0)
  qn = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), 1e-8)
  pn = protos / jnp.maximum(jnp.linalg.norm(protos, axis=-1, keepdims=True), 1e-8)
  return qn @ pn.T


def loss(logits_: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean ``-log p(y = k | x)`` under ``softmax(logits)`` (eq. 3).

  Args:
    logits_: ``[Q, K]`` from ``logits``.
    labels: ``[Q]`` integer labels in ``0 .. K - 1``.

  Returns:
    The mean cross-entropy, a scalar.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad.models import protonet
    >>> round(float(protonet.loss(jnp.zeros((4, 2)), jnp.array([0, 1, 0, 1]))), 4)   # log 2
    0.6931

  References:
    Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot
    Learning", arXiv:1703.05175, eq. (2).
  """
  _checks.rank("logits_", logits_, 2)
  _checks.rank("labels", labels, 1)
  if labels.shape[0] != logits_.shape[0]:
    raise ValueError(f"`labels` ({labels.shape[0]}) and `logits_` ({logits_.shape[0]}) must "
                     f"have one entry per query.")
  _check_concrete_labels(labels, logits_.shape[1], "labels")
  return optax.softmax_cross_entropy_with_integer_labels(logits_, labels).mean()


def accuracy(logits_: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of queries whose largest logit is their label.

  Args:
    logits_: ``[Q, K]``.
    labels: ``[Q]`` integer labels.

  Returns:
    A scalar in ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad.models import protonet
    >>> float(protonet.accuracy(jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.array([0, 1])))
    0.5

  References:
    Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot
    Learning", arXiv:1703.05175, section 3.
  """
  return jnp.mean(jnp.argmax(logits_, -1) == labels)


def episode_loss(embed, params, episode, *, way: int, distance: str = "euclidean"):
  """ProtoNet loss and accuracy of one episode.

  Args:
    embed: ``(params, images) -> embeddings`` (e.g. ``conv4().apply``).
    params: the embedding network's parameters.
    episode: a ``metagrad.tasks.Episode`` (labels in ``0 .. way - 1``).
    way: number of classes in the episode (a static int, at most the
      number of support examples).
    distance: ``"euclidean"`` or ``"cosine"``.

  Returns:
    ``(loss, accuracy)`` scalars.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import tasks
    >>> from metagrad.models import protonet
    >>> support = jnp.array([[0.0, 0.0], [4.0, 0.0]])         # one image per class
    >>> episode = tasks.Episode(support, jnp.array([0, 1]),
    ...                         jnp.array([[1.0, 0.0], [3.0, 1.0]]), jnp.array([0, 1]))
    >>> embed = lambda w, x: w * x                              # e.g. models.conv4().apply
    >>> loss, acc = protonet.episode_loss(embed, 1.0, episode, way=2)
    >>> round(float(loss), 6), float(acc)                       # log(1 + e^-8) per query
    (0.000335, 1.0)

  References:
    Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot
    Learning", arXiv:1703.05175, eq. (1)-(3); Sheng & He 2022, "Distributed
    Evolution Strategies Using TPUs for Meta-Learning", arXiv:2201.00093,
    eq. (1)-(3).
  """
  way = _checks.count("way", way)
  if episode.support_y.shape[0] < way:
    raise ValueError(f"`way` ({way}) exceeds the {episode.support_y.shape[0]} support "
                     f"examples: some class would have no prototype.")
  if episode.query_y.shape[0] < 1:
    raise ValueError("`episode` has no query examples: the loss is undefined.")
  _check_concrete_labels(episode.query_y, way, "episode.query_y")
  support = embed(params, episode.support_x)
  query = embed(params, episode.query_x)
  out = logits(query, prototypes(support, episode.support_y, way), distance)
  return loss(out, episode.query_y), accuracy(out, episode.query_y)
