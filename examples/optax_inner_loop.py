"""MAML on sine regression with an optax optimizer as the inner loop.

The inner loop is inner SGD (``models.sgd``), inner Adam
(``models.optax_rule(optax.adam(...))``) or Adam whose learning rate is itself
meta-learned (``models.optax_rule(optax.inject_hyperparams(optax.adam)(...),
learnable=("learning_rate",))``); the meta-gradient through it is taken by
backprop or, with ``--estimator es_wsr``, by ES-WSR (the same objective, one
call changed). Tasks, network and meta-batch are the sine example's (TURTLE
paper, section 3.5.2: y = A sin(x - phi), 5-shot, a 1-40-40-1 ReLU MLP).
Reports the test MSE after adaptation, the meta-gradient's compiled memory
(XLA ``memory_analysis``) and its time.

    python -m examples.optax_inner_loop --inner all --estimator backprop
    python -m examples.optax_inner_loop --inner all --estimator es_wsr
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
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


def run(inner: str, args) -> dict:
  net = models.mlp()
  rule = make_rule(inner, args)
  key = jax.random.PRNGKey(args.seed)
  theta = jax.jit(net.init)(key, jnp.zeros((1, 1)))
  meta = {"model": theta, "rule": jax.jit(rule.init)(jax.random.fold_in(key, 1), theta)}
  mse = lambda p, x, y: jnp.mean((net.apply(p, x) - y) ** 2)

  def task_loss(meta, task):
    support = lambda p: mse(p, task.support_x, task.support_y)
    adapted = models.adapt(support, meta["model"], rule, meta["rule"],
                           steps=args.inner_steps).params
    return mse(adapted, task.query_x, task.query_y)

  def meta_loss(meta, batch):
    return jnp.mean(jax.vmap(lambda t: task_loss(meta, t))(batch))

  def meta_gradient(meta, key):
    batch = tasks.sample_sine_tasks(key, num=args.meta_batch, shot=args.shot, query=args.query)
    loss = lambda m: (meta_loss(m, batch),) * 2                  # (loss, aux = loss)
    if args.estimator == "backprop":
      return estimators.backprop(loss, meta, key, has_aux=True)
    # ES-WSR's aux is each member's; the meta-loss is reported at the mean.
    grads, _ = estimators.es_wsr(loss, meta, jax.random.fold_in(key, 1), sigma=args.sigma,
                                 population=args.population, antithetic=True, has_aux=True)
    return grads, meta_loss(meta, batch)

  optimizer = optax.adam(args.meta_lr)

  def step(state, key):
    meta, opt_state = state
    grads, value = meta_gradient(meta, key)
    updates, opt_state = optimizer.update(grads, opt_state, meta)
    return (optax.apply_updates(meta, updates), opt_state), {"meta_loss": value}

  # The meta-gradient's cost, measured once on its own: compiled temporaries and time.
  compiled = jax.jit(meta_gradient).lower(meta, key).compile()
  temp_bytes = int(compiled.memory_analysis().temp_size_in_bytes)
  jax.block_until_ready(compiled(meta, key))
  times = []
  for i in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(meta, jax.random.PRNGKey(i + 1)))
    times.append(time.perf_counter() - t0)

  @functools.partial(jax.jit, static_argnames="num")
  def evaluate(meta, key, num):
    batch = tasks.sample_sine_tasks(key, num=num, shot=args.shot, query=args.query)
    return jax.vmap(lambda t: task_loss(meta, t))(batch)

  val_key = jax.random.PRNGKey(10_000 + args.seed)     # fixed validation tasks
  result = common.train(
      common.run_args(args, inner), state=(meta, optimizer.init(meta)), step_fn=step,
      name=f"sine, inner {inner}, {args.estimator}",
      resume_may_change=("inner", "val_tasks", "test_tasks"),
      metric_every=lambda s, i: {"val_mse": evaluate(s[0], val_key, args.val_tasks).mean()})
  test = np.asarray(evaluate(result.state[0], jax.random.PRNGKey(20_000 + args.seed),
                             args.test_tasks))
  mean, ci = common.mean_ci95(test)
  out = {"test_mse": mean, "test_ci95": ci, "median_mse": float(np.median(test)),
         "diverged_at": result.diverged_at, "meta_gradient_temp_bytes": temp_bytes,
         "meta_gradient_time_s": float(np.median(times))}
  if inner == "adam_learned_lr":
    out["learning_rate"] = float(result.state[0]["rule"]["learning_rate"])
  common.say(f"inner {inner}: test MSE {mean:.4f} +/- {ci:.4f} ({args.test_tasks} tasks); "
             f"meta-gradient {temp_bytes / 2**20:.2f} MiB, {out['meta_gradient_time_s'] * 1e3:.1f} ms"
             + (f"; learned Adam lr {out['learning_rate']:.4g}" if "learning_rate" in out else ""))
  return out


LABELS = {"sgd": "SGD (lr {inner_lr:g})", "adam": "Adam (lr {adam_lr:g})",
          "adam_learned_lr": "Adam, meta-learned lr (from {adam_lr:g})"}


def report(records: list[dict]) -> str:
  """The README/docs table of this example's runs (``examples.report``):
  one row per estimator, budget and inner loop, mean ± std over seeds.

  ``records`` are the loaded ``results.json`` files under ``optax_inner_loop/``.
  """
  from examples.report import Stat, commands, device, table   # report imports examples lazily
  groups: dict = {}
  for r in records:
    f = r["flags"]
    groups.setdefault((f["estimator"], f["steps"]), []).append(r)
  rows = []
  order = lambda k: (ESTIMATORS.index(k[0]), -k[1])
  for (estimator, steps), runs in sorted(groups.items(), key=lambda kv: order(kv[0])):
    flags = runs[0]["flags"]
    for inner in INNER:
      results = [r["results"][inner] for r in runs if inner in r["results"]]
      if not results:
        continue
      mse = Stat(x["test_mse"] for x in results)
      lr = Stat(x["learning_rate"] for x in results) if inner == "adam_learned_lr" else None
      rows.append([estimator, f"{steps:,}", LABELS[inner].format(**flags), mse.pm(1, 3),
                   "-" if lr is None else lr.pm(1, 4),
                   f"{np.median([x['meta_gradient_temp_bytes'] for x in results]) / 2**20:.2f}",
                   f"{np.median([x['meta_gradient_time_s'] for x in results]) * 1e3:.1f}",
                   len(results)])
  flags = records[0]["flags"]
  return (table(["meta-gradient", "meta-steps", "inner loop", "test MSE (mean ± std)",
                 "learned Adam lr", "meta-gradient temp MiB", "ms per meta-gradient", "seeds"],
                rows)
          + f"\n\n5-shot sine regression, 1-40-40-1 MLP, {flags['inner_steps']} inner steps, "
          f"meta-batch {flags['meta_batch']}, meta-optimizer Adam {flags['meta_lr']:g}, "
          f"{flags['test_tasks']} test tasks per seed; es_wsr: P = {flags['population']} "
          f"(antithetic), σ = {flags['sigma']:g}. Memory: XLA's compiled temporaries of one "
          f"meta-gradient; time: median of 5 calls; both medians over seeds. {device(records)}. "
          f"Commands:\n\n" + commands(records))


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, steps=10000, out="runs/optax_inner_loop")
  parser.add_argument("--inner", choices=(*INNER, "all"), default="all",
                      help="the inner loop's optimizer")
  parser.add_argument("--estimator", choices=ESTIMATORS, default="backprop",
                      help="how the meta-gradient through the inner loop is taken")
  parser.add_argument("--inner_steps", type=int, default=5)
  parser.add_argument("--inner_lr", type=float, default=0.01, help="inner SGD's step size")
  parser.add_argument("--adam_lr", type=float, default=0.01,
                      help="inner Adam's learning rate (the learned one's initial value)")
  parser.add_argument("--eps_root", type=float, default=1e-8,
                      help="inner Adam's eps_root (must be > 0 to differentiate through it)")
  parser.add_argument("--meta_lr", type=float, default=1e-3)
  parser.add_argument("--meta_batch", type=int, default=25)
  parser.add_argument("--shot", type=int, default=5)
  parser.add_argument("--query", type=int, default=10)
  parser.add_argument("--population", type=int, default=64, help="es_wsr: members")
  parser.add_argument("--sigma", type=float, default=0.01, help="es_wsr: perturbation scale")
  parser.add_argument("--val_tasks", type=int, default=1000)
  parser.add_argument("--test_tasks", type=int, default=2000)
  args = parser.parse_args(argv)
  common.apply_smoke(args, argv, steps=4, meta_batch=2, inner_steps=2, population=4,
                     val_tasks=10, test_tasks=20, log_every=2, checkpoint_every=2)
  common.positive_flags(args, "steps", "inner_steps", "inner_lr", "adam_lr", "eps_root",
                        "meta_lr", "meta_batch", "shot", "query", "population", "sigma",
                        "val_tasks", "test_tasks", "log_every", "checkpoint_every")
  if args.test_tasks < 2:
    raise SystemExit("error: --test_tasks must be >= 2 for a confidence interval")
  inners = INNER if args.inner == "all" else (args.inner,)
  results = {inner: run(inner, args) for inner in inners}
  common.say(f"\ninner loop        test MSE (95% CI)   [{args.estimator}]")
  for inner, r in results.items():
    common.say(f"{inner:<17} {r['test_mse']:.4f} +/- {r['test_ci95']:.4f}")
  path = common.write_results(args, {"results": results}, started=started,
                              module="examples.optax_inner_loop", argv=argv)
  common.say(f"wrote {path}")


if __name__ == "__main__":
  main()
