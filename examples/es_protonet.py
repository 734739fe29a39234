"""ES-ProtoNet on Omniglot (the ES-ProtoNet TPU paper): a ProtoNet
trained by any gradient estimator.

The population (or FD's coordinates) is split over every device of every
process through ``jax.shard_map`` on a one-axis mesh and the estimators'
``axis_name`` (section II-F: each core evaluates its members, the gradient is
all-reduced), so the same command runs on 1 CPU, 8 GPUs or a TPU pod, and on
several processes (``--coordinator``; JAX's multi-controller runtime). Data:
the paper's 4804 / 1012 / 676 random split of the rotation-augmented classes.

    python -m examples.es_protonet --estimator es_wsr --population 64 --sigma 0.01 --lr 1
    # two processes on one machine (CPU collectives), or one per host of a cluster:
    python -m examples.es_protonet --coordinator localhost:1234 --num_processes 2 --process_id 0
"""

from __future__ import annotations

import argparse
import functools
import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from examples import common
from metagrad import estimators, models, tasks

# Every first-order estimator of the library's registry: one flag swaps it.
ESTIMATORS = estimators.FIRST_ORDER
AXIS = "devices"


def chunk_flag(value: str):
  return value if value == "auto" else int(value)


def build_estimator(args):
  """``(loss_fn, params, key) -> (grads, aux)``, the population split over ``AXIS``.

  The flags an estimator accepts (by its signature) are passed to it: sigma,
  population (``--fd_coordinates`` for finite differences, whose population is
  coordinates), antithetic, chunk size, the FD step and the device axis; ES
  standardises its fitness (the paper's eq. 9 weights)."""
  spec = estimators.REGISTRY[args.estimator]
  fd = args.estimator == "finite_difference"
  flags = {"sigma": args.sigma, "population": args.fd_coordinates if fd else args.population,
           "antithetic": args.antithetic, "shaping": "standardize", "step": args.fd_step,
           "chunk_size": args.chunk_size, "axis_name": AXIS}
  accepted = inspect.signature(spec.fn).parameters
  one = functools.partial(spec.fn, has_aux=True,
                          **{k: v for k, v in flags.items() if k in accepted})
  if args.accumulate == 1 or args.estimator not in ("es", "es_wsr"):
    return one

  def accumulated(loss_fn, params, key):
    # The paper's remedy for small populations (IV): average the estimates of
    # several independent populations per step.
    draws = [one(loss_fn, params, jax.random.fold_in(key, m)) for m in range(args.accumulate)]
    grads = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *(d[0] for d in draws))
    return grads, draws[0][1]
  return accumulated


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, steps=2000, out="runs/es_protonet", omniglot=True)
  parser.add_argument("--estimator", choices=ESTIMATORS, default="es_wsr")
  parser.add_argument("--population", type=int, default=64, help="ES population (total)")
  parser.add_argument("--sigma", type=float, default=0.01, help="ES noise scale")
  parser.add_argument("--antithetic", action="store_true", help="ES: +/- noise pairs")
  parser.add_argument("--accumulate", type=int, default=1,
                      help="ES: independent populations averaged per step")
  parser.add_argument("--fd_step", type=float, default=1e-3, help="FD nudge sigma_FD (paper 1e-3)")
  parser.add_argument("--fd_coordinates", type=int, default=None,
                      help="FD: coordinates nudged per step (default: all D)")
  parser.add_argument("--lr", type=float, default=1.0, help="step size (alpha of the paper)")
  parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
  common.add_conv_flags(parser)
  parser.add_argument("--way", type=int, default=5, help="train way")
  parser.add_argument("--test_way", type=int, default=5)
  parser.add_argument("--shot", type=int, default=5)
  parser.add_argument("--query", type=int, default=5)
  parser.add_argument("--distance", choices=models.protonet.DISTANCES, default="euclidean")
  parser.add_argument("--image_size", type=int, choices=(28, 32), default=32)
  parser.add_argument("--chunk_size", type=chunk_flag, default="auto",
                      help="members evaluated at once per device: an int or 'auto'")
  parser.add_argument("--test_episodes", type=int, default=600)
  parser.add_argument("--test_at", type=_steps_list, default=(),
                      help="comma-separated steps at which the --test_episodes test pass also "
                           "runs during training (a learning curve: test_acc/test_ci95 rows in "
                           "metrics.jsonl, test_curve in results.json); each a multiple of "
                           "--log_every")
  parser.add_argument("--val_episodes", type=int, default=100)
  parser.add_argument("--memory_only", action="store_true",
                      help="compile one training step, write its XLA memory analysis "
                           "(temporaries of one meta-gradient + update) to results.json, exit")
  common.add_distributed_flags(parser)
  args = parser.parse_args(argv)
  # Smoke: one block (the same code path; a 4-block program compiles ~4x slower).
  common.apply_smoke(args, argv, steps=4, population=8, channels=4, num_blocks=1,
                     test_episodes=20, val_episodes=10, log_every=2, checkpoint_every=2)
  common.positive_flags(args, "steps", "population", "lr", "sigma", "channels", "way", "shot",
                        "query", "test_way", "test_episodes", "val_episodes", "accumulate",
                        "fd_step", "log_every", "checkpoint_every")
  if args.fd_coordinates is not None:
    common.positive_flags(args, "fd_coordinates")
  bad = [s for s in args.test_at if s <= 0 or s > args.steps or s % args.log_every]
  if bad:
    raise SystemExit(f"error: --test_at steps {bad} must be in 1..--steps {args.steps} and "
                     f"multiples of --log_every {args.log_every}")
  if args.test_episodes < 2:
    raise SystemExit("error: --test_episodes must be >= 2 for a confidence interval")
  common.initialize_distributed(args)
  devices = jax.device_count()
  if args.estimator in ("es_wsr", "es", "forward_gradient") and args.population % devices:
    raise SystemExit(f"error: --population {args.population} must be divisible by the "
                     f"{devices} devices the population is split over")
  if args.antithetic and args.population % (2 * devices):
    raise SystemExit(f"error: --antithetic needs --population divisible by 2 x {devices} "
                     f"devices (+/- pairs)")

  images = tasks.load_omniglot(image_size=args.image_size, data_dir=common.data_dir(args),
                               verbose=common.is_main_process())
  splits = tasks.omniglot_splits(images, split="es_protonet", seed=args.seed)
  for split, way in (("train", args.way), ("test", args.test_way), ("val", args.test_way)):
    if way > splits[split].shape[0]:
      raise SystemExit(f"error: --way {way} exceeds the {splits[split].shape[0]} {split} classes")
  net = models.conv4(channels=args.channels, num_blocks=args.num_blocks)
  params = jax.jit(net.init)(jax.random.PRNGKey(args.seed), jnp.asarray(splits["train"][0, :2]))
  optimizer = optax.sgd(args.lr) if args.optimizer == "sgd" else optax.adam(args.lr)
  estimator = build_estimator(args)
  episode_kw = dict(shot=args.shot, query=args.query)

  def step(state, key, train_images):
    params, opt_state = state
    k_ep, k_est = jax.random.split(key)
    episode = tasks.sample_episode(k_ep, train_images, way=args.way, **episode_kw)
    loss_fn = lambda p: models.protonet.episode_loss(net.apply, p, episode, way=args.way,
                                                     distance=args.distance)
    # has_aux: the loss and accuracy at the unperturbed params come back with the gradient.
    grads, (loss, acc) = estimator(functools.partial(_with_aux, loss_fn), params, k_est)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), {"loss": loss, "acc": acc}

  # Every device runs `step` on the same (replicated) state, key and data; the
  # estimator splits the population by axis index and all-reduces, so every
  # device returns the same new state (out_specs=P()).
  mesh = jax.make_mesh((devices,), (AXIS,))
  replicated = NamedSharding(mesh, P())
  sharded_step = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(), P()), out_specs=(P(), P()))
  place = lambda tree: jax.device_put(tree, replicated)
  train_images = place(np.asarray(splits["train"]))       # copied to the devices once

  @functools.partial(jax.jit, static_argnames=("way",))
  def evaluate(params, keys, images, way):
    def one(k):
      ep = tasks.sample_episode(k, images, way=way, **episode_kw)
      return models.protonet.episode_loss(net.apply, params, ep, way=way, distance=args.distance)[1]
    return jax.lax.map(one, keys, batch_size=50)

  local = lambda tree: jax.device_put(common.to_host(tree), jax.local_devices()[0])
  val_images, test_images = jnp.asarray(splits["val"]), jnp.asarray(splits["test"])
  val_keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), args.val_episodes)
  if args.memory_only:
    common.check_out(args)
    state = place((params, optimizer.init(params)))
    compiled = jax.jit(sharded_step).lower(state, jax.random.PRNGKey(0), train_images).compile()
    memory = compiled.memory_analysis()
    path = common.write_results(
        args, {"memory": {"temp_bytes": int(memory.temp_size_in_bytes),
                          "argument_bytes": int(memory.argument_size_in_bytes),
                          "output_bytes": int(memory.output_size_in_bytes)},
               "estimator": args.estimator,
               "parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(params)))},
        started=started, module="examples.es_protonet", argv=argv)
    common.say(f"one training step: {memory.temp_size_in_bytes / 2**20:.2f} MiB of XLA "
               f"temporaries; wrote {path}")
    return
  test_keys = jax.random.split(jax.random.PRNGKey(10_000 + args.seed), args.test_episodes)

  def test_accuracy(params):
    return common.mean_ci95(np.asarray(evaluate(params, test_keys, test_images, args.test_way)))

  def metric_every(state, step):
    row = {"val_acc": evaluate(local(state[0]), val_keys, val_images, args.test_way).mean()}
    if step in args.test_at:      # the same test episodes as the final pass
      row["test_acc"], row["test_ci95"] = test_accuracy(local(state[0]))
    return row

  state = (params, optimizer.init(params))
  result = common.train(
      args, state=state, step_fn=sharded_step, data=(train_images,), place=place,
      name=f"ES-ProtoNet ({args.estimator})",
      resume_may_change=("test_episodes", "val_episodes", "test_at", *common.DISTRIBUTED_FLAGS),
      metric_every=metric_every)
  final = local(result.state[0])
  accs = np.asarray(evaluate(final, test_keys, test_images, args.test_way))
  mean, ci = common.mean_ci95(accs)
  test_curve = [{"step": r["step"], "train_s": r["train_s"], "test_accuracy": r["test_acc"],
                 "test_ci95": r["test_ci95"]} for r in result.log if "test_acc" in r]
  kind = jax.devices()[0].device_kind
  common.say(f"test accuracy {args.test_way}-way {args.shot}-shot: {mean:.4f} +/- {ci:.4f} "
             f"(95% CI over {args.test_episodes} episodes; {devices} device(s) of "
             f"{jax.process_count()} process(es): {kind})")
  parameters = int(sum(x.size for x in jax.tree_util.tree_leaves(final)))
  path = common.write_results(
      args, {"results": {args.estimator: {"test_accuracy": mean, "test_ci95": ci,
                                          "test_std": float(accs.std()),
                                          "diverged_at": result.diverged_at,
                                          "steps": result.steps,
                                          "test_curve": test_curve}},
             "parameters": parameters},
      started=started, module="examples.es_protonet", argv=argv)
  common.say(f"wrote {path}")


def _steps_list(value: str) -> tuple[int, ...]:
  try:
    return tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}")


def _with_aux(loss_fn, params):
  loss, acc = loss_fn(params)
  return loss, (loss, acc)


if __name__ == "__main__":
  main()
