import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import models, tasks

P = models.protonet


def test_prototypes_are_class_means():
  emb = jnp.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
  labels = jnp.array([0, 0, 1, 2])
  np.testing.assert_allclose(P.prototypes(emb, labels, 3), [[1, 0], [0, 4], [1, 1]])


def test_loss_equals_hand_computation():
  protos = np.array([[0.0, 0.0], [1.0, 1.0]])
  q = np.array([[0.0, 0.5], [0.8, 0.6]])
  y = np.array([0, 1])
  d = np.array([[0.25, 1.0 + 0.25], [0.64 + 0.36, 0.04 + 0.16]])   # squared distances
  logp = -d - np.log(np.exp(-d).sum(1, keepdims=True))
  expected = -(logp[0, 0] + logp[1, 1]) / 2
  out = P.logits(jnp.asarray(q), jnp.asarray(protos))
  np.testing.assert_allclose(out, -d, rtol=1e-6)
  np.testing.assert_allclose(P.loss(out, jnp.asarray(y)), expected, rtol=1e-6)
  assert float(P.accuracy(out, jnp.asarray(y))) == 1.0


def test_cosine_logits():
  protos = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  q = jnp.array([[3.0, 3.0]])
  np.testing.assert_allclose(P.logits(q, protos, "cosine"), [[2**-0.5, 2**-0.5]], rtol=1e-6)
  with pytest.raises(ValueError, match="distance"):
    P.logits(q, protos, "manhattan")


def test_protonet_trained_by_backprop_beats_chance(omniglot):
  """A few hundred backprop episodes on real Omniglot: far above 20% chance."""
  import optax
  from metagrad import estimators
  splits = tasks.omniglot_splits(omniglot, split="standard")
  train, test = jnp.asarray(splits["train"]), jnp.asarray(splits["test"])
  net = models.conv4(channels=16)
  params = net.init(jax.random.PRNGKey(0), train[0, :2])
  opt = optax.adam(1e-3)
  state = opt.init(params)
  way, shot, query = 5, 1, 5

  # The datasets are arguments, not closed-over constants: XLA would embed and
  # fold the 60 MB training set into the program (in the suite: 67 s -> 37 s).
  @jax.jit
  def step(params, state, key, train):
    episode = tasks.sample_episode(key, train, way=way, shot=shot, query=query)
    loss = lambda p: P.episode_loss(net.apply, p, episode, way=way)[0]
    updates, state = opt.update(estimators.backprop(loss, params, key), state)
    return optax.apply_updates(params, updates), state

  for i in range(300):
    params, state = step(params, state, jax.random.PRNGKey(i), train)
  evaluate = jax.jit(jax.vmap(lambda p, k, test: P.episode_loss(
      net.apply, p, tasks.sample_episode(k, test, way=way, shot=shot, query=query), way=way)[1],
      (None, 0, None)))
  acc = float(evaluate(params, jax.random.split(jax.random.PRNGKey(10_000), 200), test).mean())
  print(f"ProtoNet 5-way 1-shot, 16 channels, 300 backprop episodes: test accuracy {acc:.3f}")
  assert acc > 0.6
