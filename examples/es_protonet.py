"""ES-ProtoNet on Omniglot (es_protonet_tpu.txt): ProtoNet trained by any estimator.

The population is sharded over all local devices with ``pmap`` and the
estimators' ``axis_name`` (section II-F: each device evaluates its members,
the gradient is all-reduced); the same code runs on 1 or N devices. Data:
the paper's 4804/1012/676 random split of the rotation-augmented classes.

    python -m examples.es_protonet --estimator es_wsr --population 64 --sigma 0.01 --lr 1
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from metagrad import estimators, models, tasks

ESTIMATORS = ("backprop", "es_wsr", "finite_difference", "forward_mode")


def build_estimator(args):
  """The gradient estimator, with its population split over ``axis_name="devices"``."""
  if args.estimator == "backprop":
    return lambda loss, params, key: estimators.backprop(loss, params, key)
  if args.estimator == "es_wsr":
    return functools.partial(estimators.es_wsr, sigma=args.sigma, population=args.population,
                             chunk_size=args.chunk_size, axis_name="devices")
  if args.estimator == "finite_difference":
    return functools.partial(estimators.finite_difference, step=args.sigma,
                             chunk_size=args.chunk_size, axis_name="devices")
  return functools.partial(estimators.forward_mode, chunk_size=args.chunk_size,
                           axis_name="devices")


def main(argv=None):
  parser = common.base_parser(__doc__, steps=2000, out="runs/es_protonet")
  parser.add_argument("--estimator", choices=ESTIMATORS, default="es_wsr")
  parser.add_argument("--population", type=int, default=64)
  parser.add_argument("--sigma", type=float, default=0.01, help="ES sigma / FD step")
  parser.add_argument("--lr", type=float, default=1.0, help="alpha of the paper")
  parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--way", type=int, default=5)
  parser.add_argument("--test_way", type=int, default=5)
  parser.add_argument("--shot", type=int, default=5)
  parser.add_argument("--query", type=int, default=5)
  parser.add_argument("--distance", choices=models.protonet.DISTANCES, default="euclidean")
  parser.add_argument("--image_size", type=int, choices=(28, 32), default=32)
  parser.add_argument("--chunk_size", type=int, default=8,
                      help="members evaluated at once (8 was fastest on a 2-core CPU)")
  parser.add_argument("--test_episodes", type=int, default=600)
  parser.add_argument("--val_episodes", type=int, default=100)
  args = parser.parse_args(argv)
  common.apply_smoke(args, argv, steps=4, population=8, channels=4, test_episodes=20,
                     val_episodes=10, log_every=2, checkpoint_every=2)
  common.positive_flags(args, "steps", "population", "lr", "sigma", "channels", "way", "shot",
                        "test_way", "test_episodes")
  devices = jax.local_devices()
  if args.estimator == "es_wsr" and args.population % len(devices):
    raise SystemExit(f"error: --population {args.population} must be divisible by the "
                     f"{len(devices)} local devices the population is sharded over")

  images = tasks.load_omniglot(image_size=args.image_size, verbose=True)
  splits = {k: jnp.asarray(v) for k, v in tasks.omniglot_splits(images, split="es_protonet",
                                                                 seed=args.seed).items()}
  for split, way in (("train", args.way), ("test", args.test_way)):
    if way > splits[split].shape[0]:
      raise SystemExit(f"error: --way {way} exceeds the {splits[split].shape[0]} {split} classes")
  net = models.conv4(channels=args.channels)
  params = jax.jit(net.init)(jax.random.PRNGKey(args.seed), splits["train"][0, :2])
  optimizer = optax.sgd(args.lr) if args.optimizer == "sgd" else optax.adam(args.lr)
  estimator = build_estimator(args)
  episode_kw = dict(shot=args.shot, query=args.query)

  # Datasets enter the compiled steps as arguments, never as closed-over
  # constants (which XLA would embed in the program and fold at compile time).
  def step(state, key, train_images):
    params, opt_state = state
    k_ep, k_est = jax.random.split(key)
    episode = tasks.sample_episode(k_ep, train_images, way=args.way, **episode_kw)
    loss_fn = lambda p: models.protonet.episode_loss(net.apply, p, episode, way=args.way,
                                                     distance=args.distance)[0]
    grads = estimator(loss_fn, params, k_est)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    loss, acc = models.protonet.episode_loss(net.apply, params, episode, way=args.way,
                                             distance=args.distance)
    return (optax.apply_updates(params, updates), opt_state), {"loss": loss, "acc": acc}

  # One code path for 1..N devices: every device sees the same episode and key;
  # the estimator splits the population (or coordinates) by axis index.
  pstep = jax.pmap(step, axis_name="devices", devices=devices)
  n = len(devices)
  train_on_devices = common.replicate_on_devices(splits["train"], devices)  # copied once

  def host_step(state, key):
    new, metrics = pstep(common.replicate(state, n), common.replicate(key, n), train_on_devices)
    return common.unreplicate(new), common.unreplicate(metrics)

  @functools.partial(jax.jit, static_argnames=("way",))
  def evaluate(params, keys, images, way):
    def one(k):
      ep = tasks.sample_episode(k, images, way=way, **episode_kw)
      return models.protonet.episode_loss(net.apply, params, ep, way=way, distance=args.distance)[1]
    return jax.lax.map(one, keys, batch_size=50)

  val_keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.val_episodes)
  state = (params, optimizer.init(params))
  state = common.train(
      args, state=state, step_fn=host_step, name=f"ES-ProtoNet ({args.estimator})",
      metric_every=lambda s, i: {"val_acc": evaluate(s[0], val_keys, splits["val"], args.test_way).mean()})
  test_keys = jax.random.split(jax.random.PRNGKey(10_000 + args.seed), args.test_episodes)
  accs = np.asarray(evaluate(state[0], test_keys, splits["test"], args.test_way))
  mean, ci = common.mean_ci95(accs)
  print(f"test accuracy {args.test_way}-way {args.shot}-shot: {mean:.4f} +/- {ci:.4f} "
        f"(95% CI, {args.test_episodes} episodes, {n} device(s): {devices[0].device_kind})")
  common.write_results(args, {"test_accuracy": mean, "test_ci95": ci, "devices": n,
                              "device_kind": devices[0].device_kind,
                              "parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(state[0])))})


if __name__ == "__main__":
  main()
