"""Which meta learning rate each first-order estimator needs, measured.

The estimators' outputs have different scales (``docs/choosing.md``): backprop,
forward gradients and ``es`` with ``shaping="none"`` estimate the gradient
itself, ES-WSR a direction of length about sigma. This example trains the same
MAML objective with each estimator under a few optimizer settings and reports
the held-out meta-loss reached, so that the rules of thumb of the "Choosing an
estimator" page are measurements, not claims.

The objective is the showdown's (``examples/estimator_showdown.py``): MAML on
5-shot sine regression (a 1-40-40-1 MLP, D = 1,761; 5 inner SGD steps of 0.01;
a fresh meta-batch of 4 tasks per meta-step), scored on 200 held-out tasks.
A configuration is ``ESTIMATOR[/POPULATION]:OPTIMIZER:LEARNING_RATE``, e.g.
``forward_gradient/8:adam:1e-3``; ``POPULATION`` is the estimator's
``population`` (forward_gradient's directions, es / es_wsr members).

    python -m examples.meta_learning_rates --seed 0
"""

from __future__ import annotations

import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from examples import common
from examples.reporting import Stat, commands, device, table, under
from metagrad import estimators, models, tasks

# D = 1,761: forward gradients with SGD are stable near K/D x backprop's rate.
D_SINE_MLP = 1761
CONFIGS = (
    "backprop:adam:1e-3",
    "backprop:sgd:1e-2",
    "backprop:sgd:1e-3",
    "forward_gradient/1:adam:3e-4",
    "forward_gradient/1:adam:1e-3",
    "forward_gradient/1:adam:3e-3",
    "forward_gradient/1:adam:1e-2",
    "forward_gradient/8:adam:1e-3",
    "forward_gradient/8:adam:3e-3",
    f"forward_gradient/1:sgd:{1e-2 / D_SINE_MLP:.3g}",
    f"forward_gradient/1:sgd:{1e-1 / D_SINE_MLP:.3g}",
    "forward_gradient/1:sgd:1e-4",
    "es/64:adam:1e-3",
    "es/64:sgd:1e-3",
    "es/64:sgd:1e-2",
    "es_wsr/64:sgd:1",
    "es_wsr/64:adam:1e-3",
)
ESTIMATORS = ("backprop", "forward_gradient", "es", "es_wsr")


class Config(NamedTuple):
  estimator: str
  population: int | None
  optimizer: str
  lr: float

  @property
  def name(self) -> str:
    pop = "" if self.population is None else f"/{self.population}"
    return f"{self.estimator}{pop}:{self.optimizer}:{self.lr:g}"


def parse_config(text: str) -> Config:
  """``ESTIMATOR[/POPULATION]:OPTIMIZER:LR`` -> Config; SystemExit naming the part."""
  parts = text.split(":")
  if len(parts) != 3:
    raise SystemExit(f"error: --configs {text!r}: expected ESTIMATOR[/POPULATION]:OPTIMIZER:LR")
  name, optimizer, lr = parts
  estimator, _, population = name.partition("/")
  if estimator not in ESTIMATORS:
    raise SystemExit(f"error: --configs {text!r}: estimator must be one of {ESTIMATORS}")
  if (estimator == "backprop") != (population == ""):
    raise SystemExit(f"error: --configs {text!r}: a population goes with every estimator but "
                     "backprop")
  if optimizer not in ("sgd", "adam"):
    raise SystemExit(f"error: --configs {text!r}: optimizer must be sgd or adam")
  try:
    pop = int(population) if population else None
    rate = float(lr)
  except ValueError:
    raise SystemExit(f"error: --configs {text!r}: population must be an int and LR a number")
  if (pop is not None and pop < 1) or not rate > 0:
    raise SystemExit(f"error: --configs {text!r}: population and LR must be positive")
  return Config(estimator, pop, optimizer, rate)


def maml_sine(args):
  """``(init params, meta_loss(theta, batch), sample(key, num))``."""
  net = models.mlp()
  mse = lambda p, x, y: jnp.mean((net.apply(p, x) - y) ** 2)

  def meta_loss(theta, batch):
    def one(task):
      adapted = models.adapt(lambda p: mse(p, task.support_x, task.support_y), theta,
                             models.sgd(args.inner_lr), {}, steps=args.inner_steps).params
      return mse(adapted, task.query_x, task.query_y)
    return jnp.mean(jax.vmap(one)(batch))

  sample = lambda key, num: tasks.sample_sine_tasks(key, num=num, shot=5, query=10)
  theta = jax.jit(net.init)(jax.random.PRNGKey(args.seed), jnp.zeros((1, 1)))
  return theta, meta_loss, sample


def run_config(config: Config, args) -> dict:
  theta, meta_loss, sample = maml_sine(args)
  # The same held-out tasks for every seed and configuration (a fixed test set).
  held_out = sample(jax.random.PRNGKey(10_000), args.test_tasks)
  evaluate = jax.jit(lambda t: meta_loss(t, held_out))
  optimizer = (optax.adam if config.optimizer == "adam" else optax.sgd)(config.lr)
  kwargs = {} if config.population is None else {"population": config.population}
  if config.estimator in ("es", "es_wsr"):
    kwargs["sigma"] = args.sigma
  estimate = getattr(estimators, config.estimator)

  def step(state, key):
    theta, opt_state = state
    batch = sample(key, args.meta_batch)
    grads = estimate(lambda t: meta_loss(t, batch), theta, jax.random.fold_in(key, 1), **kwargs)
    updates, opt_state = optimizer.update(grads, opt_state, theta)
    return (optax.apply_updates(theta, updates), opt_state), {}

  start_loss = float(evaluate(theta))
  started = time.time()
  result = common.train(
      common.run_args(args, config.name.replace(":", "_").replace("/", "_P")),
      state=(theta, optimizer.init(theta)), step_fn=step, name=config.name,
      resume_may_change=("configs",),
      metric_every=lambda s, i: {"held_out_meta_loss": evaluate(s[0])})
  return {"estimator": config.estimator, "population": config.population,
          "optimizer": config.optimizer, "lr": config.lr, "start_meta_loss": start_loss,
          "final_meta_loss": float(evaluate(result.state[0])), "diverged_at": result.diverged_at,
          "curve": [[0, start_loss]] + common.curve(result.log, "held_out_meta_loss"),
          "wall_time_s": time.time() - started}


# ------------------------------------------------------------------ report

def _plot(png: pathlib.Path, runs: list[dict], names: list[str]) -> None:
  """One panel per estimator: the held-out meta-loss of each configuration over
  training, mean over the seeds whose run did not diverge."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(ESTIMATORS), figsize=(4.2 * len(ESTIMATORS), 3.6),
                           sharey=True)
  for ax, estimator in zip(axes, ESTIMATORS):
    for name in names:
      res = [r["results"][name] for r in runs if name in r["results"]]
      if res[0]["estimator"] != estimator:
        continue
      curves = [dict(map(tuple, x["curve"])) for x in res if x["diverged_at"] is None]
      diverged = len(res) - len(curves)
      c = res[0]
      size = "" if c["population"] is None else (
          f"{'K' if estimator == 'forward_gradient' else 'P'} = {c['population']}, ")
      label = f"{size}{c['optimizer']} {c['lr']:g}" + (
          f" ({diverged}/{len(res)} diverged)" if diverged else "")
      if not curves:
        ax.plot([], [], linestyle="--", label=label)
        continue
      steps = sorted(set.intersection(*(set(c) for c in curves)))
      ax.plot(steps, [Stat(c[s] for c in curves).mean for s in steps], marker=".",
              label=label)
    ax.set_title(estimator, fontsize=10)
    ax.set_xlabel("meta-step")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  axes[0].set_ylabel("held-out meta-loss (mean over seeds)")
  axes[0].set_ylim(top=max(7.0, axes[0].get_ylim()[0] + 1.0))
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  plt.close(fig)


def learning_rates(records: list[dict], plots: pathlib.Path | None = None) -> str:
  runs = under(records, "meta_learning_rates")
  if not runs:
    return "*(no runs)*"
  names = list(dict.fromkeys(n for r in runs for n in r["results"]))
  rows = []
  for name in names:
    res = [r["results"][name] for r in runs if name in r["results"]]
    finished = [x for x in res if x["diverged_at"] is None]
    diverged = len(res) - len(finished)
    cell = Stat(x["final_meta_loss"] for x in finished).pm(1, 2)
    if diverged:
      cell += f" ({diverged} of {len(res)} diverged)"
    change = Stat(x["final_meta_loss"] - x["start_meta_loss"] for x in finished).pm(1, 2)
    c = res[0]
    rows.append([c["estimator"], c["population"] or "-", c["optimizer"], f"{c['lr']:g}",
                 cell, change, len(res)])
  f = runs[0]["flags"]
  note = (f"MAML on 5-shot sine regression (1-40-40-1 MLP, D = {D_SINE_MLP:,}; "
          f"{f['inner_steps']} inner SGD steps of {f['inner_lr']}), a fresh meta-batch of "
          f"{f['meta_batch']} tasks per step, {f['steps']} meta-steps; meta-loss on "
          f"{f['test_tasks']} held-out tasks per seed (mean ± std over seeds; a diverged "
          f"run is left out of the mean and counted); es and es_wsr at σ = {f['sigma']}. "
          f"{device(runs)}. Commands:")
  start = Stat(x["start_meta_loss"] for r in runs for x in r["results"].values())
  note = (f"At initialisation the held-out meta-loss is {start.pm(1, 2)} over seeds. " + note)
  png = "meta_learning_rates.png"
  figure = ""
  if all("curve" in x for r in runs for x in r["results"].values()):
    if plots is not None:
      _plot(plots / png, runs, names)
    figure = (f"\n\n![held-out meta-loss during training]"
              f"({(plots or pathlib.Path('examples/results')) / png})")
  return (table(["estimator", "population", "meta-optimizer", "learning rate",
                 "held-out meta-loss after training", "change from initialisation (paired)",
                 "seeds"], rows)
          + figure + f"\n\n{note}\n\n" + commands(runs))


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's documentation blocks (``examples.report``): {name: markdown}."""
  return {"learning_rates": learning_rates(records, plots)}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, steps=300, out="runs/meta_learning_rates")
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS),
                      help="ESTIMATOR[/POPULATION]:OPTIMIZER:LR, one run each")
  parser.add_argument("--inner_steps", type=int, default=5)
  parser.add_argument("--inner_lr", type=float, default=0.01)
  parser.add_argument("--meta_batch", type=int, default=4)
  parser.add_argument("--sigma", type=float, default=0.01, help="es and es_wsr")
  parser.add_argument("--test_tasks", type=int, default=200)
  args = parser.parse_args(argv)
  common.apply_smoke(args, argv, steps=4, log_every=2, checkpoint_every=2, test_tasks=8,
                     configs=["es_wsr/4:sgd:1"])
  common.positive_flags(args, "steps", "inner_steps", "inner_lr", "meta_batch", "sigma",
                        "test_tasks", "log_every", "checkpoint_every")
  configs = [parse_config(c) for c in args.configs]
  if len({c.name for c in configs}) != len(configs):
    raise SystemExit("error: --configs: a configuration is given twice")
  results = {c.name: run_config(c, args) for c in configs}
  common.say("\nconfiguration, held-out meta-loss: start -> end")
  for name, r in results.items():
    end = "diverged" if r["diverged_at"] is not None else f"{r['final_meta_loss']:.3f}"
    common.say(f"{name:<32} {r['start_meta_loss']:.3f} -> {end}")
  path = common.write_results(args, {"results": results}, started=started,
                              module="examples.meta_learning_rates", argv=argv)
  common.say(f"wrote {path}")


if __name__ == "__main__":
  main()
