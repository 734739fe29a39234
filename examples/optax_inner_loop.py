"""MAML on sine regression (and Omniglot) with an optax optimizer as the inner loop.

The inner loop is inner SGD (``models.sgd``), inner Adam
(``models.optax_rule(optax.adam(...))``) or Adam whose learning rate is itself
meta-learned (``models.optax_rule(optax.inject_hyperparams(optax.adam)(...),
learnable=("learning_rate",))``); the meta-gradient through it is taken by
backprop or, with ``--estimator es_wsr``, by ES-WSR (the same objective, one
call changed). Tasks, network and meta-batch are the sine example's (TURTLE
paper, section 3.5.2: y = A sin(x - phi), 5-shot, a 1-40-40-1 ReLU MLP);
``--task omniglot`` runs 5-way 1-shot Omniglot at the iMAML example's reduced
settings (conv4-16, 10 inner steps, 200 meta-steps). Reports the test MSE or
accuracy after adaptation, the meta-gradient's compiled memory (XLA
``memory_analysis``) and its time.

    python -m examples.optax_inner_loop --inner all --estimator backprop
    python -m examples.optax_inner_loop --inner all --estimator es_wsr
    python -m examples.optax_inner_loop --task omniglot
"""

from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from examples.reporting import Stat, commands, device, table, under
from metagrad import estimators, models, tasks

INNER = ("sgd", "adam", "adam_learned_lr")
ESTIMATORS = ("backprop", "es_wsr")


def make_rule(inner: str, args) -> models.UpdateRule:
  """The inner loop's update rule; its meta-parameters are meta-learned with the
  initialisation (none for SGD and Adam, Adam's learning rate for the third)."""
  if inner == "sgd":
    return models.sgd(args.inner_lr)
  # eps_root > 0: d sqrt(v)/dv is infinite at a zero second moment, which
  # turns the meta-gradient into NaN (optax#882); optax_rule refuses eps_root = 0.
  if inner == "adam":
    return models.optax_rule(optax.adam(args.adam_lr, eps_root=args.eps_root))
  adam = optax.inject_hyperparams(optax.adam)(learning_rate=args.adam_lr, eps_root=args.eps_root)
  return models.optax_rule(adam, learnable=("learning_rate",))


class Problem(NamedTuple):
  """One task family: how to build the learner and score an adapted one."""
  init: Callable            # key -> model params
  sample: Callable          # (key, num, *data) -> a batch of tasks (leading axis num)
  support_loss: Callable    # (params, task) -> scalar
  query_loss: Callable      # (params, task) -> scalar
  score: Callable           # (params, task) -> the reported metric (MSE or accuracy)
  data: tuple               # arrays passed to the step (never closed over)
  test_data: tuple
  metric: str               # "test_mse" or "test_accuracy"


def sine_problem(args) -> Problem:
  net = models.mlp()
  mse = lambda p, x, y: jnp.mean((net.apply(p, x) - y) ** 2)
  sample = lambda key, num: tasks.sample_sine_tasks(key, num=num, shot=args.shot,
                                                    query=args.query)
  query = lambda p, t: mse(p, t.query_x, t.query_y)
  return Problem(init=lambda key: net.init(key, jnp.zeros((1, 1))), sample=sample,
                 support_loss=lambda p, t: mse(p, t.support_x, t.support_y),
                 query_loss=query, score=query, data=(), test_data=(), metric="test_mse")


def omniglot_problem(args) -> Problem:
  images = tasks.load_omniglot(image_size=28, data_dir=common.data_dir(args), verbose=True)
  splits = {k: jnp.asarray(v) for k, v in tasks.omniglot_splits(images, split="standard").items()}
  net = models.conv4(channels=args.channels, num_blocks=args.num_blocks, num_classes=args.way)
  ce = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
  sample = lambda key, num, data: jax.vmap(
      lambda k: tasks.sample_episode(k, data, way=args.way, shot=args.shot, query=args.query))(
          jax.random.split(key, num))
  return Problem(
      init=lambda key: net.init(key, splits["train"][0, :2]), sample=sample,
      support_loss=lambda p, e: ce(p, e.support_x, e.support_y),
      query_loss=lambda p, e: ce(p, e.query_x, e.query_y),
      score=lambda p, e: jnp.mean(jnp.argmax(net.apply(p, e.query_x), -1) == e.query_y),
      data=(splits["train"],), test_data=(splits["test"],), metric="test_accuracy")


def run(inner: str, args, problem: Problem) -> dict:
  rule = make_rule(inner, args)
  omniglot = args.task == "omniglot"
  key = jax.random.PRNGKey(args.seed)
  theta = jax.jit(problem.init)(key)
  meta = {"model": theta, "rule": jax.jit(rule.init)(jax.random.fold_in(key, 1), theta)}

  def adapted(meta, task):
    return models.adapt(lambda p: problem.support_loss(p, task), meta["model"], rule,
                        meta["rule"], steps=args.inner_steps).params

  def meta_loss(meta, batch):
    # Tasks one after another on Omniglot (lax.map): vmapping per-task conv
    # kernels is slow on CPU (see examples/meta_optimizers.py).
    one = lambda t: problem.query_loss(adapted(meta, t), t)
    return jnp.mean(jax.lax.map(one, batch) if omniglot else jax.vmap(one)(batch))

  def meta_gradient(meta, key, *data):
    batch = problem.sample(key, args.meta_batch, *data)
    loss = lambda m: (meta_loss(m, batch),) * 2                  # (loss, aux = loss)
    if args.estimator == "backprop":
      return estimators.backprop(loss, meta, key, has_aux=True)
    # ES-WSR's aux is each member's; the meta-loss is reported at the mean.
    grads, _ = estimators.es_wsr(loss, meta, jax.random.fold_in(key, 1), sigma=args.sigma,
                                 population=args.population, antithetic=True, has_aux=True)
    return grads, meta_loss(meta, batch)

  optimizer = optax.adam(args.meta_lr)

  def step(state, key, *data):
    meta, opt_state = state
    grads, value = meta_gradient(meta, key, *data)
    updates, opt_state = optimizer.update(grads, opt_state, meta)
    return (optax.apply_updates(meta, updates), opt_state), {"meta_loss": value}

  # The meta-gradient's cost, measured once on its own: compiled temporaries and time.
  compiled = jax.jit(meta_gradient).lower(meta, key, *problem.data).compile()
  temp_bytes = int(compiled.memory_analysis().temp_size_in_bytes)
  jax.block_until_ready(compiled(meta, key, *problem.data))
  times = []
  for i in range(3 if omniglot else 5):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(meta, jax.random.PRNGKey(i + 1), *problem.data))
    times.append(time.perf_counter() - t0)

  @functools.partial(jax.jit, static_argnames="num")
  def evaluate(meta, key, num, *data):
    batch = problem.sample(key, num, *data)
    one = lambda t: problem.score(adapted(meta, t), t)
    return jax.lax.map(one, batch, batch_size=8) if omniglot else jax.vmap(one)(batch)

  val_key = jax.random.PRNGKey(10_000 + args.seed)     # fixed validation tasks
  result = common.train(
      common.run_args(args, inner), state=(meta, optimizer.init(meta)), step_fn=step,
      name=f"{args.task}, inner {inner}, {args.estimator}", data=problem.data,
      resume_may_change=("inner", "val_tasks", "test_tasks"),
      metric_every=lambda s, i: {"val_" + problem.metric[5:]: evaluate(
          s[0], val_key, args.val_tasks, *problem.test_data).mean()})
  test = np.asarray(evaluate(result.state[0], jax.random.PRNGKey(20_000 + args.seed),
                             args.test_tasks, *problem.test_data))
  mean, ci = common.mean_ci95(test)
  out = {problem.metric: mean, "test_ci95": ci,
         ("median_accuracy" if omniglot else "median_mse"): float(np.median(test)),
         "diverged_at": result.diverged_at, "meta_gradient_temp_bytes": temp_bytes,
         "meta_gradient_time_s": float(np.median(times))}
  if inner == "adam_learned_lr":
    out["learning_rate"] = float(result.state[0]["rule"]["learning_rate"])
  common.say(f"inner {inner}: {problem.metric.replace('_', ' ')} {mean:.4f} +/- {ci:.4f} "
             f"({args.test_tasks} tasks); meta-gradient {temp_bytes / 2**20:.2f} MiB, "
             f"{out['meta_gradient_time_s'] * 1e3:.1f} ms"
             + (f"; learned Adam lr {out['learning_rate']:.4g}" if "learning_rate" in out else ""))
  return out


LABELS = {"sgd": "SGD (lr {inner_lr:g})", "adam": "Adam (lr {adam_lr:g})",
          "adam_learned_lr": "Adam, meta-learned lr (from {adam_lr:g})"}


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's report block (``examples.report``): per task, one row per
  estimator, budget and inner loop, mean ± std over seeds."""
  records = under(records, "optax_inner_loop")
  parts = []
  for task in TASK_DEFAULTS:
    runs_of_task = [r for r in records if r["flags"].get("task", "sine") == task]
    if not runs_of_task:
      continue
    metric, scale, digits = (("test_mse", 1, 3) if task == "sine"
                             else ("test_accuracy", 100, 2))
    groups: dict = {}
    for r in runs_of_task:
      groups.setdefault((r["flags"]["estimator"], r["flags"]["steps"]), []).append(r)
    rows = []
    order = lambda k: (ESTIMATORS.index(k[0]), -k[1])
    for (estimator, steps), runs in sorted(groups.items(), key=lambda kv: order(kv[0])):
      flags = runs[0]["flags"]
      for inner in INNER:
        results = [r["results"][inner] for r in runs if inner in r["results"]]
        if not results:
          continue
        value = Stat(x[metric] for x in results)
        lr = Stat(x["learning_rate"] for x in results) if inner == "adam_learned_lr" else None
        rows.append([estimator, f"{steps:,}", LABELS[inner].format(**flags),
                     value.pm(scale, digits), "-" if lr is None else lr.pm(1, 4),
                     f"{np.median([x['meta_gradient_temp_bytes'] for x in results]) / 2**20:.2f}",
                     f"{np.median([x['meta_gradient_time_s'] for x in results]) * 1e3:.1f}",
                     len(results)])
    flags = runs_of_task[0]["flags"]
    what = ("test MSE (mean ± std)" if task == "sine" else "test accuracy % (mean ± std)")
    setting = ("5-shot sine regression, 1-40-40-1 MLP" if task == "sine" else
               f"Omniglot {flags['way']}-way {flags['shot']}-shot, conv{flags['num_blocks']} "
               f"with {flags['channels']} channels")
    calls = 5 if task == "sine" else 3
    es = ({e for e, _ in groups} & {"es_wsr"})
    title = "Sine regression" if task == "sine" else "Omniglot"
    parts.append(
        f"**{title}**\n\n"
        + table(["meta-gradient", "meta-steps", "inner loop", what, "learned Adam lr",
               "meta-gradient temp MiB", "ms per meta-gradient", "seeds"], rows)
        + f"\n\n{setting}, {flags['inner_steps']} inner steps, meta-batch "
        f"{flags['meta_batch']}, meta-optimizer Adam {flags['meta_lr']:g}, "
        f"{flags['test_tasks']} test tasks per seed"
        + (f"; es_wsr: P = {flags['population']} (antithetic), σ = {flags['sigma']:g}"
           if es else "")
        + f". Memory: XLA's compiled temporaries of one meta-gradient; time: median of "
        f"{calls} calls; both medians over seeds. {device(runs_of_task)}. Commands:\n\n"
        + commands(runs_of_task))
  return {"optax_inner_loop": "\n\n".join(parts)}


# Per task: the sine example's settings, and the iMAML Omniglot example's reduced ones.
TASK_DEFAULTS = {
    "sine": dict(steps=10000, inner_steps=5, inner_lr=0.01, meta_batch=25, shot=5, query=10,
                 val_tasks=1000, test_tasks=2000),
    "omniglot": dict(steps=200, inner_steps=10, inner_lr=0.1, meta_batch=8, shot=1, query=5,
                     val_tasks=100, test_tasks=300),
}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, out="runs/optax_inner_loop", omniglot=True,
                              steps_help="meta-steps (default: sine 10000, omniglot 200)")
  parser.add_argument("--task", choices=tuple(TASK_DEFAULTS), default="sine")
  parser.add_argument("--inner", choices=(*INNER, "all"), default="all",
                      help="the inner loop's optimizer")
  parser.add_argument("--estimator", choices=ESTIMATORS, default="backprop",
                      help="how the meta-gradient through the inner loop is taken")
  # Task-dependent defaults are None here and filled from TASK_DEFAULTS.
  parser.add_argument("--inner_steps", type=int, default=None, help="(sine 5, omniglot 10)")
  parser.add_argument("--inner_lr", type=float, default=None,
                      help="inner SGD's step size (sine 0.01, omniglot 0.1)")
  parser.add_argument("--adam_lr", type=float, default=0.01,
                      help="inner Adam's learning rate (the learned one's initial value)")
  parser.add_argument("--eps_root", type=float, default=1e-8,
                      help="inner Adam's eps_root (must be > 0 to differentiate through it)")
  parser.add_argument("--meta_lr", type=float, default=1e-3)
  parser.add_argument("--meta_batch", type=int, default=None, help="(sine 25, omniglot 8)")
  parser.add_argument("--way", type=int, default=5, help="omniglot: classes per episode")
  parser.add_argument("--shot", type=int, default=None, help="(sine 5, omniglot 1)")
  parser.add_argument("--query", type=int, default=None,
                      help="query examples (per class on omniglot; sine 10, omniglot 5)")
  common.add_conv_flags(parser)
  parser.add_argument("--population", type=int, default=64, help="es_wsr: members")
  parser.add_argument("--sigma", type=float, default=0.01, help="es_wsr: perturbation scale")
  parser.add_argument("--val_tasks", type=int, default=None, help="(sine 1000, omniglot 100)")
  parser.add_argument("--test_tasks", type=int, default=None, help="(sine 2000, omniglot 300)")
  args = parser.parse_args(argv)
  for name, value in TASK_DEFAULTS[args.task].items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  common.apply_smoke(args, argv, steps=4, meta_batch=2, inner_steps=2, population=4,
                     val_tasks=10, test_tasks=20, log_every=2, checkpoint_every=2,
                     channels=4, num_blocks=1)
  common.positive_flags(args, "steps", "inner_steps", "inner_lr", "adam_lr", "eps_root",
                        "meta_lr", "meta_batch", "way", "shot", "query", "population", "sigma",
                        "channels", "val_tasks", "test_tasks", "log_every", "checkpoint_every")
  if args.test_tasks < 2:
    raise SystemExit("error: --test_tasks must be >= 2 for a confidence interval")
  problem = sine_problem(args) if args.task == "sine" else omniglot_problem(args)
  inners = INNER if args.inner == "all" else (args.inner,)
  results = {inner: run(inner, args, problem) for inner in inners}
  common.say(f"\ninner loop        {problem.metric} (95% CI)   [{args.task}, {args.estimator}]")
  for inner, r in results.items():
    common.say(f"{inner:<17} {r[problem.metric]:.4f} +/- {r['test_ci95']:.4f}")
  path = common.write_results(args, {"results": results}, started=started,
                              module="examples.optax_inner_loop", argv=argv)
  common.say(f"wrote {path}")


if __name__ == "__main__":
  main()
