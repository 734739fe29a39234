"""Kronecker-factored meta-optimizers ("Decoupling Adaptation from
Modeling with Meta-Optimizers for Meta Learning"), Tables 1 and 2.

Table 1 (``--table 1``): synthetic 100-d linear binary classification, 1-step
MAML (binary cross-entropy, meta-batch 1, plain SGD) for LR w/ MAML, LR + LinNet
w/ MAML, LR w/ KLin and LR w/ KFC. A.1.1's data admits two readings
(``--points``): fresh points for every task (``per_task``), or one fixed set of
1,000 points shared by all tasks, the same ``--shot`` support and ``--query``
query points for every task (``shared``; tasks differ only in w). The run also
reports each reading's one-step ceilings (closed form / oracle, see
``table1_ceilings``) next to the meta-learned rows.

Table 2 (``--table 2``): the 2-layer CNN (SCNN) on N-way K-shot Omniglot with
4 adaptation steps (Adam) w/ MAML, Meta-SGD, Meta-Curvature and KFC.

Every row reports post-adaptation test accuracy (mean, std and 95% CI over
``--test_tasks`` tasks); a row whose training diverges is stopped and reported
with the step it diverged at.

    python -m examples.meta_optimizers --table 1 --points per_task --seed 0
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from examples.reporting import Stat, commands, device, late_change, paper, table, under, wall
from metagrad import estimators, models, tasks


class Row(NamedTuple):
  model: str
  rule: str
  inner_lr: float        # the adaptation learning rate used here
  meta_lr: float         # the meta learning rate used here
  paper_inner_lr: float  # A.1.1 / A.1.2's values, recorded beside ours
  paper_meta_lr: float


# A.1.1: LR 0.5 / 0.01 (adaptation / meta), LinNet 1.9 / 1.9, KLin 3.33 / 3.33,
# KFC 3.9 / 3.9. The last three diverge (NaN within 1,000-2,000 steps, both
# readings, unscaled inputs); they use the largest stable rate of the sweep
# {3.9, 3.33, 1.9, 1, 0.5, 0.3, 0.1, 0.03, 0.01} over 30,000 steps, still tied
# (docs/reproductions/kronecker.md, examples/results/kronecker_t1_lr_sweep).
TABLE1 = {
    "LR w/ MAML": Row("lr", "sgd", 0.5, 0.01, 0.5, 0.01),
    "LR + LinNet w/ MAML": Row("linnet", "sgd", 0.5, 0.5, 1.9, 1.9),
    "LR w/ KLin": Row("lr", "klin", 1.9, 1.9, 3.33, 3.33),
    "LR w/ KFC": Row("lr", "kfc", 1.0, 1.0, 3.9, 3.9),
}
# A.1.2 (Omniglot SCNN): MAML 0.8 / 0.003; Meta-SGD, Meta-Curvature, KFC 0.5 / 0.003.
TABLE2 = {
    "SCNN w/ MAML": Row("scnn", "sgd", 0.8, 0.003, 0.8, 0.003),
    "SCNN w/ MSGD": Row("scnn", "meta_sgd", 0.5, 0.003, 0.5, 0.003),
    "SCNN w/ MC": Row("scnn", "meta_curvature", 0.5, 0.003, 0.5, 0.003),
    "SCNN w/ KFC": Row("scnn", "kfc", 0.5, 0.003, 0.5, 0.003),
}
TABLES = {1: TABLE1, 2: TABLE2}
POINTS = ("per_task", "shared")


def make_rule(name: str, lr: float, table: int):
  # A.1.1's parameter counts (KLin 10,001, KFC 20,002) leave no room for the
  # learnable rescaling factor, which A.1.2 introduces for the CNNs only.
  normalize = table == 2
  return {"sgd": lambda: models.sgd(lr), "meta_sgd": lambda: models.meta_sgd(lr),
          "meta_curvature": lambda: models.meta_curvature(lr),
          "klin": lambda: models.klin(lr, normalize=normalize),
          "kfc": lambda: models.kfc(lr, num_layers=2 if table == 1 else 4,
                                    normalize=normalize)}[name]()


def bce(logits, y):
  return optax.sigmoid_binary_cross_entropy(logits[:, 0], y).mean()


def binary_accuracy(logits, y):
  return jnp.mean((logits[:, 0] > 0) == (y > 0))


def cross_entropy(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def accuracy(logits, y):
  return jnp.mean(jnp.argmax(logits, -1) == y)


class Problem(NamedTuple):
  sample: callable       # (data, key, split) -> task
  data: dict             # arrays passed to the compiled steps as arguments
  example: jax.Array     # an input batch for model.init
  num_outputs: int
  loss: callable
  accuracy: callable


def make_problem(args) -> Problem:
  """The task sampler and its data. ``data`` goes to the jitted steps as an
  argument: closing over the Omniglot arrays would embed hundreds of MB of
  constants in the XLA program."""
  key = jax.random.PRNGKey(args.seed)
  if args.table == 1:
    pools = tasks.make_task_pools(key, dim=100)
    points = (tasks.shared_points(jax.random.fold_in(key, 7), num=args.shot + args.query)
              if args.points == "shared" else None)
    data = {"train": pools.train, "test": pools.test, "points": points}

    def sample(data, key, split):
      task = tasks.sample_from_pool(key, data[split], shot=args.shot, query=args.query,
                                    points=data["points"])
      return task._replace(support_x=task.support_x * args.input_scale,
                           query_x=task.query_x * args.input_scale)
    return Problem(sample, data, jnp.zeros((1, 100)), 1, bce, binary_accuracy)
  images = tasks.load_omniglot(image_size=28, data_dir=common.data_dir(args), verbose=True)
  splits = {k: jnp.asarray(v) for k, v in tasks.omniglot_splits(images, split="standard").items()}
  sample = lambda data, key, split: tasks.sample_episode(key, data[split], way=args.way,
                                                         shot=args.shot, query=args.query)
  return Problem(sample, splits, splits["train"][0, :2], args.way, cross_entropy, accuracy)


def make_model(kind: str, num_outputs: int, args):
  if kind == "lr":
    return models.logistic_regression(num_outputs)
  if kind == "linnet":
    return models.linear_network((64, 64, 64), num_outputs)
  return models.conv4(channels=args.channels, num_blocks=2, num_classes=num_outputs,
                      pooling="global_mean")


def table1_ceilings(problem: Problem, args, *, num_fit: int = 20_000,
                    num_eval: int = 4_000) -> dict:
  """Post-adaptation test accuracy that one gradient step can reach, per reading.

  * ``closed_form_one_step`` (per-task reading): one step from theta = 0 moves
    w along ``X^T (y - 1/2)``, whose cosine with the true w is
    ``(1 + pi D / 2N)^(-1/2)``, so its accuracy is ``1 - arccos(.)/pi``. Any
    fixed init or linear preconditioner does no better by rotational symmetry.
  * ``plain_step``: one SGD step from theta = 0 (weights and bias), measured.
  * ``oracle_linear_step``: the best linear map of the first gradient to the
    boundary's direction, fitted by least squares on ``num_fit`` training
    tasks: a ceiling for KLin-like (linear) one-step meta-optimizers.
  * ``least_squares_fit``: a full per-task least-squares fit of the +-1 labels
    on the support points, no meta-learning (a reference, not a bound).
  """
  d = 100

  def first_gradient(task):   # BCE gradient at theta = 0, [w (d); b]
    r = 0.5 - task.support_y.astype(jnp.float32)
    return jnp.concatenate([task.support_x.T @ r / r.shape[0], r.mean()[None]])

  def acc(w_hat, b_hat, task):
    return jnp.mean(((task.query_x @ w_hat + b_hat) > 0) == (task.query_y > 0))

  def keys(num, seed):
    return jax.random.split(jax.random.PRNGKey(seed), num)

  # Tasks are regenerated from their keys and streamed (lax.map), never held
  # all at once: 20,000 tasks of 1,000 points would be 8 GB.
  sample = lambda split: (lambda k: problem.sample(problem.data, k, split))
  stream = lambda fn, ks: jax.lax.map(fn, ks, batch_size=256)

  @jax.jit
  def fit_oracle(ks):
    def features(k):
      task = sample("train")(k)
      w = task.boundary / jnp.linalg.norm(task.boundary)
      return first_gradient(task), jnp.concatenate([w, jnp.zeros(1)])
    g, target = stream(features, ks)
    return jnp.linalg.lstsq(g, target)[0]                        # [d + 1, d + 1]

  @jax.jit
  def evaluate(ks, oracle):
    def one(k):
      task = sample("test")(k)
      g = first_gradient(task)
      pred = g @ oracle
      w_ls = jnp.linalg.lstsq(task.support_x, 2.0 * task.support_y - 1.0)[0]
      return jnp.stack([acc(-g[:d], -g[d], task), acc(pred[:d], pred[d], task),
                        acc(w_ls, 0.0, task)])
    return stream(one, ks).mean(0)

  oracle = fit_oracle(keys(num_fit, args.seed + 500))
  plain, linear, fitted = (float(v) for v in evaluate(keys(num_eval, args.seed + 600), oracle))
  out = {"plain_step": plain, "oracle_linear_step": linear, "least_squares_fit": fitted}
  n = args.shot
  if args.points == "per_task":
    out["closed_form_one_step"] = 1 - math.acos((1 + math.pi * d / (2 * n)) ** -0.5) / math.pi
  return out


def run_row(name: str, row: Row, problem: Problem, args) -> dict:
  inner_lr = row.inner_lr if args.inner_lr is None else args.inner_lr
  meta_lr = row.meta_lr if args.meta_lr is None else args.meta_lr
  net = make_model(row.model, problem.num_outputs, args)
  rule = make_rule(row.rule, inner_lr, args.table)
  key = jax.random.PRNGKey(args.seed)
  theta = jax.jit(net.init)(key, problem.example)
  meta = {"model": theta, "rule": jax.jit(rule.init)(jax.random.fold_in(key, 1), theta)}
  optimizer = optax.sgd(meta_lr) if args.table == 1 else optax.adam(meta_lr)

  def adapted_metrics(meta, task):
    support = lambda p: problem.loss(net.apply(p, task.support_x), task.support_y)
    params = models.adapt(support, meta["model"], rule, meta["rule"], steps=args.inner_steps).params
    logits = net.apply(params, task.query_x)
    return problem.loss(logits, task.query_y), problem.accuracy(logits, task.query_y)

  # Tasks of a meta-batch one after another (lax.map) for the CNNs: after
  # adaptation every task has its own kernels, and vmapping convolutions over
  # per-task kernels makes XLA:CPU emit grouped convolutions, 2.6x slower for
  # Table 2's SCNN. The linear models of Table 1 are vmapped.
  def over_tasks(fn, keys):
    return jax.vmap(fn)(keys) if args.table == 1 else jax.lax.map(fn, keys)

  def meta_loss(meta, keys, data):
    losses, accs = over_tasks(lambda k: adapted_metrics(meta, problem.sample(data, k, "train")),
                              keys)
    return losses.mean(), {"loss": losses.mean(), "acc": accs.mean()}

  def step(state, key, data):
    meta, opt_state = state
    keys = jax.random.split(key, args.meta_batch)
    grads, metrics = estimators.backprop(lambda m: meta_loss(m, keys, data), meta, has_aux=True)
    updates, opt_state = optimizer.update(grads, opt_state, meta)
    return (optax.apply_updates(meta, updates), opt_state), metrics

  @functools.partial(jax.jit, static_argnames="num")
  def evaluate(meta, key, num, data):
    return jax.lax.map(lambda k: adapted_metrics(meta, problem.sample(data, k, "test"))[1],
                       jax.random.split(key, num), batch_size=16)

  run_args = common.run_args(args, name.replace(" ", "_").replace("/", ""))
  result = common.train(run_args, state=(meta, optimizer.init(meta)), step_fn=step, name=name,
                        data=(problem.data,), resume_may_change=("test_tasks",))
  meta = result.state[0]
  accs = np.asarray(evaluate(meta, jax.random.PRNGKey(10_000 + args.seed), args.test_tasks,
                             problem.data))
  mean, ci = common.mean_ci95(accs)
  count = sum(x.size for x in jax.tree_util.tree_leaves(meta["rule"]))
  status = f"diverged at step {result.diverged_at}" if result.diverged_at else "finite throughout"
  common.say(f"{name}: test accuracy {mean:.4f} +/- {ci:.4f} ({status}; inner lr {inner_lr}, "
             f"meta lr {meta_lr}; optimizer params {count})")
  return {"test_accuracy": mean, "test_ci95": ci, "test_std": float(accs.std()),
          "steps": result.steps, "diverged_at": result.diverged_at, "inner_lr": inner_lr,
          "meta_lr": meta_lr, "paper_inner_lr": row.paper_inner_lr,
          "paper_meta_lr": row.paper_meta_lr, "meta_optimizer_parameters": int(count),
          # The logged training curve (window means), so the report can say whether it was flat.
          "train_curve": common.curve(result.log, "acc"),
          "train_loss_curve": common.curve(result.log, "loss")}


# ------------------------------------------------------------------ report

KRONECKER_T1_ROWS = ("LR w/ MAML", "LR + LinNet w/ MAML", "LR w/ KLin", "LR w/ KFC")
CEILINGS = {"closed_form_one_step": "one SGD step from θ = 0, closed form",
            "plain_step": "one SGD step from θ = 0, measured",
            "oracle_linear_step": "best linear map of the first gradient (oracle)",
            "least_squares_fit": "per-task least-squares fit (no meta-learning)"}


def kronecker_t1(records: list[dict]) -> str:
  runs = {p: under(records, f"kronecker_t1/{p}") for p in ("per_task", "shared")}
  header = ["row", "paper (synthetic)"] + [
      f"{p.replace('_', '-')} points: acc. % (mean ± std, {len(runs[p])} seeds)"
      for p in runs] + ["adaptation / meta lr used (paper)"]
  rows = []
  for name in KRONECKER_T1_ROWS:
    cells, lrs = [], ""
    for p, rs in runs.items():
      res = [r["results"][name] for r in rs if name in r.get("results", {})]
      stat = Stat(x["test_accuracy"] for x in res)
      div = sum(1 for x in res if x.get("diverged_at"))
      cells.append(stat.pm(100) + (f" ({div} diverged)" if div else ""))
      if res:
        x = res[0]
        lrs = (f"{x['inner_lr']:g} / {x['meta_lr']:g} ({x['paper_inner_lr']:g} / "
               f"{x['paper_meta_lr']:g})")
    rows.append([name, paper("kronecker_t1", name), *cells, lrs])
  for key, label in CEILINGS.items():
    cells = []
    for rs in runs.values():
      values = [r["ceilings"][key] for r in rs if key in r.get("ceilings", {})]
      cells.append(Stat(values).pm(100) if values else "-")
    rows.append([f"*ceiling: {label}*", "", *cells, ""])
  everything = runs["per_task"] + runs["shared"]
  return (table(header, rows) + f"\n\nMeasured on {device(everything)}; "
          f"{wall(everything)} per seed (4 rows + ceilings). Commands:\n\n"
          + commands(everything))


def kronecker_t1_sweep(records: list[dict]) -> str:
  runs = under(records, "kronecker_t1_lr_sweep")
  cells: dict = {}
  lrs = set()
  for r in runs:
    points = r["flags"]["points"]
    lr = r["flags"]["inner_lr"]
    lrs.add(lr)
    for name, x in r["results"].items():
      value = (f"NaN at step {x['diverged_at']}" if x.get("diverged_at")
               else f"{100 * x['test_accuracy']:.1f}")
      cells[(points, name, lr)] = value
  lrs = sorted(lrs, reverse=True)
  header = ["reading", "row"] + [f"lr {lr:g}" for lr in lrs]
  rows = []
  for points in ("per_task", "shared"):
    for name in ("LR + LinNet w/ MAML", "LR w/ KLin", "LR w/ KFC"):
      if any((points, name, lr) in cells for lr in lrs):
        rows.append([points.replace("_", "-"), name] + [cells.get((points, name, lr), "-")
                                                       for lr in lrs])
  return (table(header, rows) + "\n\nTest accuracy % after 30,000 steps (seed 0), adaptation "
          "and meta learning rate tied as in A.1.1; \"NaN at step s\": training diverged.")


KRONECKER_T2_ROWS = ("SCNN w/ MAML", "SCNN w/ MSGD", "SCNN w/ MC", "SCNN w/ KFC")


def kronecker_t2(records: list[dict]) -> str:
  runs = under(records, "kronecker_t2")
  if not runs:
    return "*(no runs)*"
  flags = runs[0]["flags"]
  # Rows re-run at another meta learning rate (a deviation), one folder per rate.
  reruns = under(records, "kronecker_t2_kfc_meta_lr")
  entries = [(name, name, runs) for name in KRONECKER_T2_ROWS]
  for lr in sorted({r["flags"]["meta_lr"] for r in reruns}, reverse=True):
    at_lr = [r for r in reruns if r["flags"]["meta_lr"] == lr]
    for name in KRONECKER_T2_ROWS:
      if any(name in r["results"] for r in at_lr):
        entries.append((f"{name}, meta lr {lr:g} (deviation)", name, at_lr))
  rows, means = [], {}
  for label, name, source in entries:
    res = [r["results"][name] for r in source if name in r.get("results", {})]
    late = [d for d in (late_change(x.get("train_curve")) for x in res) if d is not None]
    lrs = sorted({x["meta_lr"] for x in res})
    curves = [x["train_curve"] for x in res if x.get("train_curve")]
    peak_last = (f"{100 * Stat(max(v for _, v in c) for c in curves).mean:.1f} → "
                 f"{100 * Stat(c[-1][1] for c in curves).mean:.1f}") if curves else "-"
    losses = [max(v for _, v in x["train_loss_curve"]) for x in res if x.get("train_loss_curve")]
    accuracy = Stat(x["test_accuracy"] for x in res)
    rows.append([label, paper("kronecker_t2", name), accuracy.pm(100),
                 Stat(late).pm(100, 1) if late else "-", peak_last,
                 ", ".join(f"{v:.3g}" for v in losses) or "-",
                 "/".join(f"{v:g}" for v in lrs), len(res)])
    means[label] = accuracy.mean
  short = lambda label: label.replace("SCNN w/ ", "").replace(" (deviation)", "")
  order = lambda labels: " < ".join(short(n) for n in sorted(labels, key=means.get))
  orders = f"Measured order (worst to best) at the paper's rates: {order(KRONECKER_T2_ROWS)}"
  for label, name, _ in entries[len(KRONECKER_T2_ROWS):]:
    swapped = [label if n == name else n for n in KRONECKER_T2_ROWS]
    orders += f"; with {short(label)}: {order(swapped)}"
  settings = (f"{flags.get('way')}-way {flags.get('shot')}-shot, SCNN with "
              f"{flags.get('channels')} channels, meta-batch {flags.get('meta_batch')}, "
              f"{flags.get('inner_steps')} adaptation steps, {flags.get('steps')} meta-steps, "
              f"{flags.get('test_tasks')} test tasks" if flags else "")
  return (table(["row", "paper (10-way 5-shot, 64 ch)", "metagrad: acc. % (mean ± std over seeds)",
                 "train acc. change over the last 30% of steps (pts)",
                 "train acc. %: best logged → last (mean)",
                 "largest logged train loss, per seed", "meta lr (paper: 0.003)",
                 "seeds"], rows)
          + f"\n\nSettings: {settings}. {orders}; paper: MAML < MSGD < MC < KFC. "
          f"{wall(runs)} per run of the paper-rate rows, {device(runs + reruns)}. "
          f"Commands:\n\n" + commands(runs + reruns))


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's report blocks (``examples.report``): {name: markdown}."""
  return {"kronecker_t1": kronecker_t1(records), "kronecker_t1_sweep": kronecker_t1_sweep(records), "kronecker_t2": kronecker_t2(records)}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, steps=30000, out="runs/meta_optimizers", omniglot=True)
  parser.add_argument("--table", type=int, choices=(1, 2), default=1)
  parser.add_argument("--only", type=str, nargs="+", default=None,
                      help="run only these rows, e.g. 'LR w/ KLin'")
  parser.add_argument("--points", choices=POINTS, default="per_task",
                      help="Table 1: fresh points per task, or one fixed set for all tasks")
  parser.add_argument("--inner_lr", type=float, default=None,
                      help="override every row's adaptation learning rate")
  parser.add_argument("--meta_lr", type=float, default=None,
                      help="override every row's meta learning rate")
  parser.add_argument("--meta_batch", type=int, default=None, help="default 1 (T1), 32 (T2)")
  parser.add_argument("--inner_steps", type=int, default=None, help="default 1 (T1), 4 (T2)")
  parser.add_argument("--way", type=int, default=10, help="Table 2 classes per task")
  parser.add_argument("--shot", type=int, default=None,
                      help="support points/examples per class; default 500 (T1), 5 (T2)")
  parser.add_argument("--query", type=int, default=None, help="default 500 (T1), 5 (T2)")
  parser.add_argument("--channels", type=int, default=64, help="Table 2 SCNN filters")
  parser.add_argument("--test_tasks", type=int, default=600)
  parser.add_argument("--ceilings", action=argparse.BooleanOptionalAction, default=True,
                      help="Table 1: also compute the reading's one-step ceilings")
  parser.add_argument("--input_scale", type=float, default=1.0,
                      help="Table 1: multiply x ~ N(0, I_100) by this (A.1.1: unscaled)")
  args = parser.parse_args(argv)
  t1 = args.table == 1
  for flag, v1, v2 in (("meta_batch", 1, 32), ("inner_steps", 1, 4), ("shot", 500, 5),
                       ("query", 500, 5)):
    if getattr(args, flag) is None:
      setattr(args, flag, v1 if t1 else v2)
  common.apply_smoke(args, argv, steps=4, test_tasks=16, log_every=2, checkpoint_every=2,
                     channels=8 if t1 else 4, meta_batch=min(args.meta_batch, 2),
                     shot=min(args.shot, 20), query=min(args.query, 20),
                     inner_steps=args.inner_steps if t1 else 2, way=args.way if t1 else 5)
  common.positive_flags(args, "steps", "meta_batch", "inner_steps", "shot", "query", "channels",
                        "test_tasks", "log_every", "checkpoint_every", "input_scale")
  for flag in ("inner_lr", "meta_lr"):
    if getattr(args, flag) is not None:
      common.positive_flags(args, flag)
  if args.test_tasks < 2:
    raise SystemExit("error: --test_tasks must be >= 2 for a confidence interval")
  table = TABLES[args.table]
  unknown = [r for r in (args.only or ()) if r not in table]
  if unknown:
    raise SystemExit(f"error: --only {unknown} not in Table {args.table}: {list(table)}")
  if t1 and args.points == "shared" and args.shot + args.query > 1000:
    raise SystemExit("error: --points shared: --shot + --query must be <= the 1,000 points")
  if not t1 and args.way > 1692:
    raise SystemExit("error: --way exceeds the 1,692 test classes")
  problem = make_problem(args)
  rows = {n: r for n, r in table.items() if args.only is None or n in args.only}
  results = {name: run_row(name, row, problem, args) for name, row in rows.items()}
  extra = {"table": args.table}
  if t1:
    extra["points"] = args.points
  if t1 and args.ceilings:
    extra["ceilings"] = table1_ceilings(problem, args, num_fit=2_000 if args.smoke else 20_000,
                                        num_eval=200 if args.smoke else 4_000)
  common.say(f"\nTable {args.table}: post-adaptation test accuracy (95% CI)")
  for name, r in results.items():
    note = f"  (diverged at step {r['diverged_at']})" if r["diverged_at"] else ""
    common.say(f"{name:<22} {100 * r['test_accuracy']:.2f}% +/- {100 * r['test_ci95']:.2f}{note}")
  for name, value in extra.get("ceilings", {}).items():
    common.say(f"ceiling {name:<22} {100 * value:.2f}%")
  path = common.write_results(args, {**extra, "results": results}, started=started,
                              module="examples.meta_optimizers", argv=argv)
  common.say(f"wrote {path} and per-row metrics.jsonl / learning_curve.png under {args.out}")


if __name__ == "__main__":
  main()
