"""Meta-gradients over long unrolls: TBPTT vs truncated ES vs PES vs noise-reuse ES.

Two problems of Vicol, Metz & Sohl-Dickstein (2021, "Unbiased Gradient
Estimation in Unrolled Computation Graphs with Persistent Evolution
Strategies", arXiv:2112.13835):

* ``influence``: influence balancing (Tallec & Ollivier 2017; PES section
  5.1). A 23-d linear system ``s <- A s + theta * signs`` (A = (I + shift) / 2,
  10 positive and 13 negative signs) runs forever; each window of K steps is
  scored by ``(s_0 - 1)^2 / 2``. The optimum is known in closed form; short
  truncations drive TBPTT to the wrong theta, PES finds the right one.
* ``lr_schedule``: meta-learn the learning-rate schedule of SGD training an
  MLP (1-32-32-1, sine regression, one task per inner problem) for
  ``--inner_steps`` steps, the schedule ``lr_t = exp(theta_0) (1 - t/T) +
  exp(theta_1) t/T`` of the PES paper's toy regression; the meta-objective is
  the sum of training losses over the whole run, truncated into windows of K.

Every method reports its final theta, the full-horizon meta-loss of that
theta (evaluated by an untruncated unroll), a learning curve and wall time.

    python -m examples.unrolled_optimization --task influence
    python -m examples.unrolled_optimization --task lr_schedule --inner_steps 1000
"""

from __future__ import annotations

import argparse
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from examples.reporting import Stat, commands, device, table, under
from metagrad import estimators, models, tasks

METHODS = ("truncated_backprop", "truncated_es", "pes", "noise_reuse_es")


# ----------------------------------------------------------------- influence balancing
N_STATE, N_POSITIVE = 23, 10
A_MATRIX = 0.5 * jnp.eye(N_STATE) + 0.5 * jnp.eye(N_STATE, k=1)
SIGNS = jnp.where(jnp.arange(N_STATE) < N_POSITIVE, 1.0, -1.0)


def influence_problem(window: int):
  def unroll(params, inner, key, w):
    del key, w
    s = inner["s"]
    for _ in range(window):
      s = A_MATRIX @ s + params["theta"][0] * SIGNS
    return 0.5 * (s[0] - 1.0) ** 2, {"s": s}

  init_inner = lambda key: {"s": jnp.ones(N_STATE)}
  # The fixed point s* = theta (I - A)^-1 signs must have s*_0 = 1.
  optimum = 1.0 / float(jnp.linalg.solve(jnp.eye(N_STATE) - A_MATRIX, SIGNS)[0])

  def evaluate(params):   # the paper's evaluation: 500 steps from scratch
    s = jnp.ones(N_STATE)
    s = jax.lax.fori_loop(0, 500, lambda _, s: A_MATRIX @ s + params["theta"][0] * SIGNS, s)
    return 0.5 * (s[0] - 1.0) ** 2

  return unroll, init_inner, {"theta": jnp.array([0.5])}, evaluate, {"optimal_theta": optimum}


# ----------------------------------------------------------------- learned LR schedule
def lr_schedule_problem(window: int, horizon: int):
  net = models.mlp(hidden=(32, 32))
  mse = lambda p, x, y: jnp.mean((net.apply(p, x) - y) ** 2)

  def init_inner(key):
    k_task, k_init = jax.random.split(key)
    task = tasks.sample_sine_task(k_task, shot=64, query=1)
    return {"params": net.init(k_init, task.support_x), "x": task.support_x, "y": task.support_y,
            "t": jnp.zeros((), jnp.int32)}

  def lr_at(theta, t):
    frac = t / horizon
    return jnp.exp(theta[0]) * (1.0 - frac) + jnp.exp(theta[1]) * frac

  def unroll(params, inner, key, w):
    del key, w
    def step(carry, _):
      p, t, total = carry
      loss, g = jax.value_and_grad(mse)(p, inner["x"], inner["y"])
      lr = lr_at(params["theta"], t)
      p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
      return (p, t + 1, total + loss), None
    (p, t, total), _ = jax.lax.scan(step, (inner["params"], inner["t"], 0.0), None, length=window)
    return total / horizon, {**inner, "params": p, "t": t}

  def evaluate(params):   # the whole horizon on 16 fixed tasks
    keys = jax.random.split(jax.random.PRNGKey(123), 16)
    loss_fn = lambda k: estimators.full_unroll(unroll, init_inner, k,
                                               num_windows=horizon // window)(params)
    return jnp.mean(jax.lax.map(loss_fn, keys))

  theta0 = {"theta": jnp.array([-4.0, -4.0])}
  return unroll, init_inner, theta0, evaluate, {}


def run_method(method: str, problem, args) -> dict:
  unroll, init_inner, theta, evaluate, _ = problem
  num_windows = None if args.task == "influence" else args.inner_steps // args.window
  estimator = getattr(estimators, method)
  kwargs = {} if method == "truncated_backprop" else {"sigma": args.sigma}
  if num_windows is not None:
    kwargs["init_inner"] = init_inner
  optimizer = optax.sgd(args.meta_lr) if args.meta_optimizer == "sgd" else optax.adam(args.meta_lr)
  est_state = estimators.init_state(
      estimator, init_inner, jax.random.PRNGKey(args.seed), num_particles=args.particles,
      num_windows=num_windows, params=theta, unroll=unroll,
      stagger=num_windows is not None and args.stagger)

  def step(state, key):
    theta, opt_state, est_state = state
    grads, est_state = estimator(unroll, theta, est_state, key, **kwargs)
    updates, opt_state = optimizer.update(grads, opt_state, theta)
    theta = optax.apply_updates(theta, updates)
    return (theta, opt_state, est_state), {"window_loss": jnp.nanmean(est_state.loss)}

  evaluate_jit = jax.jit(evaluate)
  run_args = common.run_args(args, method)
  started = time.time()
  result = common.train(
      run_args, state=(theta, optimizer.init(theta), est_state), step_fn=step,
      name=f"{args.task}: {method}", resume_may_change=("methods",),
      metric_every=lambda s, i: {"full_horizon_loss": evaluate_jit(s[0]),
                                 **{f"theta_{j}": v for j, v in
                                    enumerate(np.ravel(common.to_host(s[0]["theta"])))}})
  final = result.state[0]
  return {"final_theta": [float(v) for v in np.ravel(final["theta"])],
          "full_horizon_loss": float(evaluate_jit(final)), "diverged_at": result.diverged_at,
          "wall_time_s": time.time() - started}


def plot(out: pathlib.Path, methods, title: str) -> None:
  import json
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for method in methods:
    rows = [json.loads(l) for l in (out / method / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    axes[0].plot(steps, [r["full_horizon_loss"] for r in rows], label=method)
    axes[1].plot(steps, [r["theta_0"] for r in rows], label=method)
  axes[0].set_yscale("log")
  axes[0].set_title("full-horizon meta-loss")
  axes[1].set_title("theta_0")
  for ax in axes:
    ax.set_xlabel("meta-iteration")
  axes[0].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out / "meta_loss.png", dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------ report

def unrolled(records: list[dict]) -> str:
  parts = []
  influence = {k: under(records, f"unrolled/influence_K{k}") for k in (1, 10, 100)}
  rows = []
  optimum = None
  for k, runs in influence.items():
    for r in runs[:1]:
      optimum = r.get("optimal_theta", optimum)
    methods = sorted({m for r in runs for m in r["results"]})
    for m in methods:
      res = [r["results"][m] for r in runs if m in r["results"]]
      rows.append([m, k, Stat(x["final_theta"][0] for x in res).pm(1, 4),
                   Stat(x["full_horizon_loss"] for x in res).pm(1, 3), len(res)])
  if rows:
    parts.append("**Influence balancing** (optimal θ = "
                 f"{optimum:.4f}; 1,000 particles, σ = 0.1, SGD 1e-4, 3,000 meta-steps)\n\n"
                 + table(["method", "K", "final θ (mean ± std)", "loss of a 500-step unroll",
                          "seeds"], rows))
  runs = under(records, "unrolled/lr_schedule")
  if runs:
    methods = sorted({m for r in runs for m in r["results"]})
    rows = []
    for m in methods:
      res = [r["results"][m] for r in runs if m in r["results"]]
      rows.append([m, Stat(x["final_theta"][0] for x in res).pm(1, 2),
                   Stat(x["final_theta"][1] for x in res).pm(1, 2),
                   Stat(x["full_horizon_loss"] for x in res).pm(1, 3),
                   f"{Stat(x['wall_time_s'] for x in res).mean:.0f} s"])
    f = runs[0]["flags"]
    parts.append(f"**Learned learning-rate schedule** (SGD on a 1-32-32-1 MLP, sine regression, "
                 f"T = {f['inner_steps']} steps, windows of K = {f['window']}, "
                 f"{f['particles']} particles, σ = {f['sigma']}, Adam {f['meta_lr']}, "
                 f"{f['steps']} meta-steps; θ = log learning rates at the start and end)\n\n"
                 + table(["method", "θ0 (log lr at t = 0)", "θ1 (log lr at t = T)",
                          "full-horizon meta-loss", "wall time"], rows))
  everything = [r for rs in influence.values() for r in rs] + runs
  return ("\n\n".join(parts) + f"\n\n{device(everything)}. Commands:\n\n"
          + commands(everything)) if parts else "*(no runs)*"


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's report blocks (``examples.report``): {name: markdown}."""
  return {"unrolled": unrolled(records)}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, steps=3000, out="runs/unrolled")
  parser.add_argument("--task", choices=("influence", "lr_schedule"), default="influence")
  parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
  parser.add_argument("--window", type=int, default=1, help="K, inner steps per truncation")
  parser.add_argument("--inner_steps", type=int, default=1000,
                      help="lr_schedule: T, inner steps of one training run (the horizon)")
  parser.add_argument("--particles", type=int, default=1000)
  parser.add_argument("--sigma", type=float, default=0.1)
  parser.add_argument("--meta_lr", type=float, default=1e-4)
  parser.add_argument("--meta_optimizer", choices=("sgd", "adam"), default="sgd")
  parser.add_argument("--stagger", action=argparse.BooleanOptionalAction, default=True,
                      help="lr_schedule: spread particles over the horizon")
  args = parser.parse_args(argv)
  common.apply_smoke(args, argv, steps=4, particles=8, inner_steps=20, log_every=2,
                     checkpoint_every=2)
  common.positive_flags(args, "steps", "window", "inner_steps", "particles", "sigma", "meta_lr",
                        "log_every", "checkpoint_every")
  if args.particles % 2:
    raise SystemExit("error: --particles must be even (antithetic pairs)")
  if args.task == "lr_schedule" and args.inner_steps % args.window:
    raise SystemExit("error: --inner_steps must be a multiple of --window")
  problem = (influence_problem(args.window) if args.task == "influence"
             else lr_schedule_problem(args.window, args.inner_steps))
  results = {m: run_method(m, problem, args) for m in args.methods}
  out = pathlib.Path(args.out)
  plot(out, args.methods, f"{args.task}, K = {args.window}")
  common.say(f"\n{args.task} (K = {args.window}): method, final theta, full-horizon loss")
  for m, r in results.items():
    common.say(f"{m:<20} {np.round(r['final_theta'], 4)}  {r['full_horizon_loss']:.4g}  "
               f"({r['wall_time_s']:.0f} s)")
  path = common.write_results(args, {"task": args.task, **problem[4], "results": results},
                              started=started, module="examples.unrolled_optimization",
                              argv=argv)
  common.say(f"wrote {path} and {out / 'meta_loss.png'}")


if __name__ == "__main__":
  main()
