"""Prototypical-network pieces (Snell et al. 2017; es_protonet_tpu.txt eq. 1-3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

DISTANCES = ("euclidean", "cosine")


def prototypes(embeddings: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Class means ``c_k = 1/|S_k| sum_{i in S_k} f(x_i)`` (eq. 1).

  ``num_classes`` is static (jit-friendly); a class with no support example
  gets a zero prototype.
  """
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=embeddings.dtype)   # [N, K]
  counts = one_hot.sum(0)[:, None]
  return (one_hot.T @ embeddings) / jnp.maximum(counts, 1)


def logits(queries: jax.Array, protos: jax.Array, distance: str = "euclidean") -> jax.Array:
  """``-||f(x) - c_k||^2`` (eq. 2) or cosine similarity, ``[queries, classes]``."""
  if distance == "euclidean":
    sq = (jnp.sum(queries**2, -1, keepdims=True) - 2 * queries @ protos.T
          + jnp.sum(protos**2, -1)[None, :])
    return -jnp.maximum(sq, 0.0)
  if distance == "cosine":
    qn = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), 1e-8)
    pn = protos / jnp.maximum(jnp.linalg.norm(protos, axis=-1, keepdims=True), 1e-8)
    return qn @ pn.T
  raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}.")


def loss(logits_: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean ``-log p(y = k | x)`` under ``softmax(logits)`` (eq. 3)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_, labels).mean()


def accuracy(logits_: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(logits_, -1) == labels)


def episode_loss(embed, params, episode, *, way: int, distance: str = "euclidean"):
  """ProtoNet loss and accuracy of one episode.

  Args:
    embed: ``(params, images) -> embeddings`` (e.g. ``conv4().apply``).
    params: the embedding network's parameters.
    episode: a :class:`metagrad.tasks.Episode`.
    way: number of classes in the episode (static).
    distance: ``"euclidean"`` or ``"cosine"``.

  Returns:
    ``(loss, accuracy)`` scalars.
  """
  support = embed(params, episode.support_x)
  query = embed(params, episode.query_x)
  out = logits(query, prototypes(support, episode.support_y, way), distance)
  return loss(out, episode.query_y), accuracy(out, episode.query_y)
