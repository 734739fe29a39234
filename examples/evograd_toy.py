"""EvoGrad on the 1-D problem of EvoGrad's section 4.1 (Fig. 2 and Fig. 3).

f_T(x) = (x - 1)^2 + lambda x^2,  f_V(x) = (x - 0.5)^2,  truth (lambda - 1) / (lambda + 1)^3.

Fig. 2: EvoGrad's hypergradient estimate over a grid of lambda in [0, 2]
(mean and std over 100 repetitions with random x, tau = 0.5, eps ~ N(0, 1))
for 2, 10 and 100 model copies, against the closed form.
Fig. 3: trajectories of (x, lambda) under SGD (lr 0.1, 5 steps) from 5 random
starts, with EvoGrad's hypergradient vs the exact one.

    python -m examples.evograd_toy
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from examples import common
from examples.reporting import commands, table, under
from metagrad import estimators
from metagrad.tasks import evograd_toy as toy


def estimate_grid(lams, copies, repeats, key, tau):
  def one(lam, k):
    kx, ke = jax.random.split(k)
    x = jax.random.uniform(kx, (), minval=0.0, maxval=1.0)
    return estimators.evograd(toy.train_loss, toy.val_loss, x, lam, ke, population=copies,
                              sigma=1.0, temperature=tau)
  keys = jax.random.split(key, repeats)
  return jax.jit(jax.vmap(lambda l: jax.vmap(lambda k: one(l, k))(keys)))(lams)


def trajectories(starts, steps, lr, key, copies, tau, exact):
  """Online bilevel SGD: x <- x - lr df_T/dx, then lambda <- lambda - lr hypergradient."""
  def hypergradient(x, lam, k):
    if exact:
      # The closed form of section 4.1 (the hypergradient at x*(lambda)).
      return toy.true_hypergradient(lam)
    return estimators.evograd(toy.train_loss, toy.val_loss, x, lam, k, population=copies,
                              sigma=1.0, temperature=tau)

  def run(start, k):
    def body(carry, i):
      x, lam = carry
      x = x - lr * jax.grad(toy.train_loss)(x, lam)
      lam = lam - lr * hypergradient(x, lam, jax.random.fold_in(k, i))
      return (x, lam), jnp.stack([x, lam])
    _, path = jax.lax.scan(body, (start[0], start[1]), jnp.arange(steps))
    return jnp.concatenate([start[None], path])
  return jax.vmap(run)(starts, jax.random.split(key, starts.shape[0]))


def plot(lams, grids, paths, out: pathlib.Path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 3.4), squeeze=False)
  for ax, (copies, est) in zip(axes[0], grids.items()):
    mean, std = est.mean(1), est.std(1)
    ax.plot(lams, toy.true_hypergradient(lams), "r-", label="ground truth")
    ax.plot(lams, mean, "b-", label="EvoGrad")
    ax.fill_between(lams, mean - std, mean + std, color="b", alpha=0.2)
    ax.set_title(f"{copies} model copies")
    ax.set_xlabel("lambda")
  axes[0, 0].set_ylabel("d f_V / d lambda")
  axes[0, 0].legend()
  fig.tight_layout()
  fig.savefig(out / "fig2_hypergradient.png", dpi=100)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(paths), figsize=(4.2 * len(paths), 3.6), squeeze=False)
  xs, ls = np.meshgrid(np.linspace(-0.2, 1.4, 100), np.linspace(-0.2, 2.2, 100))
  for ax, (copies, (evo, exact)) in zip(axes[0], paths.items()):
    ax.contourf(xs, ls, (xs - 0.5) ** 2, levels=20, cmap="Greys_r", alpha=0.5)
    for p, q in zip(evo, exact):
      ax.plot(q[:, 0], q[:, 1], "r.-", alpha=0.8)
      ax.plot(p[:, 0], p[:, 1], "b.-", alpha=0.8)
      ax.plot(p[0, 0], p[0, 1], "ko", mfc="none")
      ax.plot(p[-1, 0], p[-1, 1], "bx")
      ax.plot(q[-1, 0], q[-1, 1], "rx")
    ax.set_title(f"{copies} copies: EvoGrad (blue) vs exact (red)")
    ax.set_xlabel("x")
  axes[0, 0].set_ylabel("lambda")
  fig.tight_layout()
  fig.savefig(out / "fig3_trajectories.png", dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------ report

def evograd_toy(records: list[dict]) -> str:
  runs = under(records, "evograd_toy")
  if not runs:
    return "*(no runs)*"
  res = runs[0]["results"]
  rows = [[k, f"{v['correlation_with_truth']:.3f}", f"{v['mean_abs_error']:.4f}",
           f"{v['mean_std']:.3f}", f"{v['final_distance_evograd_vs_exact']:.3f}"]
          for k, v in res.items()]
  return (table(["copies K", "corr(mean estimate, truth)", "mean abs. error", "mean std",
                 "final (x, λ) gap to exact-hypergradient paths"], rows)
          + "\n\nFig. 2 / 3 of EvoGrad (τ = 0.5, ε ~ N(0, 1), 100 repetitions, 5 SGD steps of "
          "lr 0.1 from 5 starts); plots in the run directory. Command:\n\n" + commands(runs))


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's report blocks (``examples.report``): {name: markdown}."""
  return {"evograd_toy": evograd_toy(records)}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, out="runs/evograd_toy")
  parser.add_argument("--trajectory_steps", type=int, default=5, help="Fig. 3's SGD steps")
  parser.add_argument("--copies", type=int, nargs="+", default=[2, 10, 100])
  parser.add_argument("--repeats", type=int, default=100)
  parser.add_argument("--temperature", type=float, default=0.5)
  parser.add_argument("--lr", type=float, default=0.1)
  args = parser.parse_args(argv)
  common.check_out(args)
  common.apply_smoke(args, argv, copies=[2, 10], repeats=10)
  common.positive_flags(args, "trajectory_steps", "repeats", "temperature", "lr")
  if min(args.copies) < 2:
    raise SystemExit("error: --copies must all be >= 2 (a population)")
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  key = jax.random.PRNGKey(args.seed)
  lams = jnp.linspace(0.0, 2.0, 21)
  truth = np.asarray(toy.true_hypergradient(lams))
  starts = jax.random.uniform(jax.random.fold_in(key, 1), (5, 2), minval=0.0, maxval=2.0)
  starts = starts.at[:, 0].multiply(0.6)
  grids, paths, metrics = {}, {}, {}
  for copies in args.copies:
    est = np.asarray(estimate_grid(lams, copies, args.repeats, jax.random.fold_in(key, copies),
                                   args.temperature))
    grids[copies] = est
    mean = est.mean(1)
    evo = np.asarray(trajectories(starts, args.trajectory_steps, args.lr, key, copies, args.temperature, False))
    exact = np.asarray(trajectories(starts, args.trajectory_steps, args.lr, key, copies, args.temperature, True))
    paths[copies] = (evo, exact)
    metrics[copies] = {
        "correlation_with_truth": float(np.corrcoef(mean, truth)[0, 1]),
        "mean_abs_error": float(np.abs(mean - truth).mean()),
        "mean_std": float(est.std(1).mean()),
        "final_distance_evograd_vs_exact": float(np.linalg.norm(evo[:, -1] - exact[:, -1], axis=1).mean()),
    }
    common.say(f"{copies:4d} copies: corr {metrics[copies]['correlation_with_truth']:.3f}  "
          f"MAE {metrics[copies]['mean_abs_error']:.4f}  std {metrics[copies]['mean_std']:.3f}  "
          f"trajectory gap {metrics[copies]['final_distance_evograd_vs_exact']:.3f}")
  plot(np.asarray(lams), grids, paths, out)
  path = common.write_results(args, {"results": {f"{c} copies": m for c, m in metrics.items()}},
                              started=started, module="examples.evograd_toy", argv=argv)
  common.say(f"wrote {path}, {out / 'fig2_hypergradient.png'} and {out / 'fig3_trajectories.png'}")


if __name__ == "__main__":
  main()
