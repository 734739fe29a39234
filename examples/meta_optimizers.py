"""Kronecker-factored meta-optimizers (meta_optimizers_kronecker.txt), Tables 1 and 2.

Table 1 (``--table 1``): synthetic 100-d linear binary classification, 1-step
MAML (binary cross-entropy, meta-batch 1, SGD) for LR w/ MAML, LR + LinNet
w/ MAML, LR w/ KLin and LR w/ KFC, learning rates of A.1.1.
Table 2 (``--table 2``): the 2-layer CNN (SCNN) on 10-way 5-shot Omniglot with
4 adaptation steps (Adam, meta lr 0.003) w/ MAML, Meta-SGD, Meta-Curvature, KFC.
Reports post-adaptation test accuracy with a 95% confidence interval.

    python -m examples.meta_optimizers --table 1 --steps 30000
"""

from __future__ import annotations

import copy
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from metagrad import estimators, models, tasks

# name: (model, rule, adaptation lr, meta lr) -- A.1.1 (synthetic) and A.1.2 (Omniglot SCNN).
TABLE1 = {
    "LR w/ MAML": ("lr", "sgd", 0.5, 0.01),
    "LR + LinNet w/ MAML": ("linnet", "sgd", 1.9, 1.9),
    "LR w/ KLin": ("lr", "klin", 3.33, 3.33),
    "LR w/ KFC": ("lr", "kfc", 3.9, 3.9),
}
TABLE2 = {
    "SCNN w/ MAML": ("scnn", "sgd", 0.8, 0.003),
    "SCNN w/ MSGD": ("scnn", "meta_sgd", 0.5, 0.003),
    "SCNN w/ MC": ("scnn", "meta_curvature", 0.5, 0.003),
    "SCNN w/ KFC": ("scnn", "kfc", 0.5, 0.003),
}


def make_rule(name: str, lr: float, table: int):
  return {"sgd": lambda: models.sgd(lr), "meta_sgd": lambda: models.meta_sgd(lr),
          "meta_curvature": lambda: models.meta_curvature(lr), "klin": lambda: models.klin(lr),
          "kfc": lambda: models.kfc(lr, num_layers=2 if table == 1 else 4)}[name]()


def make_problem(args):
  """(sample_task(data, key, split) -> task, data, example input, num_outputs, loss, accuracy).

  ``data`` is passed to the jitted steps as an argument: closing over the
  Omniglot arrays would embed hundreds of MB of constants in the XLA program."""
  if args.table == 1:
    pools = tasks.make_task_pools(jax.random.PRNGKey(args.seed), dim=100)
    data = {"train": pools.train, "test": pools.test}
    def sample(data, key, split):
      task = tasks.sample_from_pool(key, data[split], shot=args.shot, query=args.query)
      # x ~ N(0, I_100) has norm ~10; at A.1.1's learning rates (up to 3.9, plain
      # SGD) that diverges here, so inputs are scaled (labels are scale-free).
      return task._replace(support_x=task.support_x * args.input_scale,
                           query_x=task.query_x * args.input_scale)
    loss = lambda logits, y: optax.sigmoid_binary_cross_entropy(logits[:, 0], y).mean()
    acc = lambda logits, y: jnp.mean((logits[:, 0] > 0) == (y > 0))
    return sample, data, jnp.zeros((1, 100)), 1, loss, acc
  images = tasks.load_omniglot(verbose=True)
  splits = {k: jnp.asarray(v) for k, v in tasks.omniglot_splits(images, split="standard").items()}
  sample = lambda data, key, split: tasks.sample_episode(key, data[split], way=args.way,
                                                         shot=args.shot, query=args.query)
  loss = lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  acc = lambda logits, y: jnp.mean(jnp.argmax(logits, -1) == y)
  return sample, splits, splits["train"][0, :2], args.way, loss, acc


def make_model(kind: str, num_outputs: int, args):
  if kind == "lr":
    return models.logistic_regression(num_outputs)
  if kind == "linnet":
    return models.linear_network((64, 64, 64), num_outputs)
  return models.conv4(channels=args.channels, num_blocks=2, num_classes=num_outputs,
                      pooling="global_mean")


def run(name: str, spec, problem, args) -> dict:
  kind, rule_name, inner_lr, meta_lr = spec
  sample, data, example, num_outputs, loss_fn, acc_fn = problem
  net = make_model(kind, num_outputs, args)
  rule = make_rule(rule_name, inner_lr, args.table)
  key = jax.random.PRNGKey(args.seed)
  theta = jax.jit(net.init)(key, example)
  meta = {"model": theta, "rule": jax.jit(rule.init)(jax.random.fold_in(key, 1), theta)}
  optimizer = optax.sgd(meta_lr) if args.table == 1 else optax.adam(meta_lr)

  def adapted_metrics(meta, task):
    support = lambda p: loss_fn(net.apply(p, task.support_x), task.support_y)
    params = models.adapt(support, meta["model"], rule, meta["rule"], steps=args.inner_steps).params
    logits = net.apply(params, task.query_x)
    return loss_fn(logits, task.query_y), acc_fn(logits, task.query_y)

  def meta_loss(meta, keys, data):
    return jax.vmap(lambda k: adapted_metrics(meta, sample(data, k, "train")))(keys)

  @jax.jit
  def data_step(state, key, data):
    meta, opt_state = state
    keys = jax.random.split(key, args.meta_batch)
    grads = estimators.backprop(lambda m: meta_loss(m, keys, data)[0].mean(), meta, key)
    losses, accs = meta_loss(meta, keys, data)
    updates, opt_state = optimizer.update(grads, opt_state, meta)
    return (optax.apply_updates(meta, updates), opt_state), {"loss": losses.mean(),
                                                              "acc": accs.mean()}

  @functools.partial(jax.jit, static_argnames="num")
  def evaluate(meta, key, num, data):
    return jax.lax.map(lambda k: adapted_metrics(meta, sample(data, k, "test"))[1],
                       jax.random.split(key, num), batch_size=16)

  step = lambda state, key: data_step(state, key, data)

  run_args = copy.copy(args)
  run_args.out = str(pathlib.Path(args.out) / name.replace(" ", "_").replace("/", ""))
  state = common.train(run_args, state=(meta, optimizer.init(meta)), step_fn=step, name=name)
  accs = np.asarray(evaluate(state[0], jax.random.PRNGKey(10_000 + args.seed), args.test_tasks,
                             data))
  mean, ci = common.mean_ci95(accs)
  count = sum(x.size for x in jax.tree_util.tree_leaves(state[0]["rule"]))
  print(f"{name}: test accuracy {mean:.4f} +/- {ci:.4f} (optimizer params {count})", flush=True)
  return {"test_accuracy": mean, "test_ci95": ci, "test_std": float(accs.std()),
          "meta_optimizer_parameters": int(count)}


def main(argv=None):
  parser = common.base_parser(__doc__, steps=30000, out="runs/meta_optimizers")
  parser.add_argument("--table", type=int, choices=(1, 2), default=1)
  parser.add_argument("--only", type=str, default=None, help="run one row, e.g. 'LR w/ KLin'")
  parser.add_argument("--meta_batch", type=int, default=None, help="default 1 (T1), 32 (T2)")
  parser.add_argument("--inner_steps", type=int, default=None, help="default 1 (T1), 4 (T2)")
  parser.add_argument("--way", type=int, default=10)
  parser.add_argument("--shot", type=int, default=None, help="default 500 (T1: 1,000 points per task, A.1.1), 5 (T2)")
  parser.add_argument("--query", type=int, default=None, help="default 500 (T1), 5 (T2)")
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--test_tasks", type=int, default=600)
  parser.add_argument("--input_scale", type=float, default=0.1,
                      help="Table 1: multiply x ~ N(0, I_100) by this (1/sqrt(100))")
  args = parser.parse_args(argv)
  t1 = args.table == 1
  for flag, v1, v2 in (("meta_batch", 1, 32), ("inner_steps", 1, 4), ("shot", 500, 5),
                       ("query", 500, 5)):
    if getattr(args, flag) is None:
      setattr(args, flag, v1 if t1 else v2)
  common.apply_smoke(args, argv, steps=4, test_tasks=16, log_every=2, checkpoint_every=2,
                     channels=8, meta_batch=min(args.meta_batch, 2), shot=min(args.shot, 20),
                     query=min(args.query, 20))
  common.positive_flags(args, "steps", "meta_batch", "inner_steps", "shot", "query", "channels",
                        "test_tasks")
  table = TABLE1 if t1 else TABLE2
  if args.only is not None and args.only not in table:
    raise SystemExit(f"error: --only must be one of {list(table)}")
  problem = make_problem(args)
  if not t1 and args.way > 1692:
    raise SystemExit("error: --way exceeds the test classes")
  rows = {n: s for n, s in table.items() if args.only in (None, n)}
  results = {name: run(name, spec, problem, args) for name, spec in rows.items()}
  print(f"\nTable {args.table}: post-adaptation test accuracy (95% CI)")
  for name, r in results.items():
    print(f"{name:<22} {100 * r['test_accuracy']:.2f}% +/- {100 * r['test_ci95']:.2f}")
  common.write_results(args, {"table": args.table, "rows": results})


if __name__ == "__main__":
  main()
