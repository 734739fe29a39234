"""One estimator of each family on problems with a known answer: accuracy, scale,
time and memory (``make demo``, about 2 minutes on a 2-core CPU).

Panel 1, the first-order estimators with their defaults on MAML for 5-shot
sine regression (1-40-40-1 MLP, T inner SGD steps, a meta-batch of tasks;
``--protonet`` adds a conv4 ProtoNet episode of synthetic glyphs): cosine to
the exact (backprop) meta-gradient and the norm ratio |estimate| / |exact|
(why learning rates do not transfer between estimators), median wall time
and XLA's compiled peak temporary memory.

Panel 2, the hypergradient estimators on ridge regression with one learned
log-penalty per feature (the inner problem solved in closed form): cosine of
``implicit``, ``t1_t2`` and ``evograd`` to the exact hypergradient of the
validation loss at the inner optimum.

Panel 3, the unrolled estimators on influence balancing (PES paper, section
5.1) at theta = 0.5, one step per window: the mean estimate of the horizon's
gradient over many keys (+- 2 standard errors) against the exact gradient.
Truncated backprop and truncated ES point the wrong way; PES and noise-reuse
ES are unbiased.

Panel 4, the reason this library exists: meta-gradient memory of the sine
MAML objective as the inner loop grows (T = 1 ... 1,000) for backprop,
backprop with sqrt(T) checkpoints, iMAML's implicit gradient, es_wsr and
(up to ``--forward_mode_max`` steps, its cost is D x T) forward_mode.

    python -m examples.estimator_showdown
"""

from __future__ import annotations

import argparse
import functools
import math
import pathlib
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from examples import common
from examples.reporting import table, under
from metagrad import estimators, models, tasks


def maml_objective(inner_steps: int, meta_batch: int, key, checkpoint_every=None,
                   mixed_mode=False):
  net = models.mlp()
  batch = jax.jit(lambda k: tasks.sample_sine_tasks(k, num=meta_batch, shot=5, query=10))(key)
  params = jax.jit(net.init)(jax.random.PRNGKey(1), batch.support_x[0])
  mse = lambda p, x, y: jnp.mean((net.apply(p, x) - y) ** 2)

  def meta_loss(theta):
    def one(task):
      adapted = models.adapt(lambda p: mse(p, task.support_x, task.support_y), theta,
                             models.sgd(0.01), {}, steps=inner_steps,
                             checkpoint_every=checkpoint_every, mixed_mode=mixed_mode).params
      return mse(adapted, task.query_x, task.query_y)
    return jnp.mean(jax.vmap(one)(batch))

  def imaml_gradient(theta, key, reg=1.0):
    def one(task):
      support = lambda p: mse(p, task.support_x, task.support_y)
      inner = estimators.proximal(support, jax.lax.stop_gradient(theta), reg=reg)
      adapted = models.adapt(inner, theta, models.sgd(0.01), {}, steps=inner_steps).params
      return estimators.imaml(support, lambda p: mse(p, task.query_x, task.query_y), adapted,
                              theta, key, reg=reg, num_iterations=10)
    return jax.tree_util.tree_map(lambda g: g.mean(0), jax.vmap(one)(batch))
  return meta_loss, params, imaml_gradient


def protonet_objective(channels: int, key):
  @jax.jit
  def synthetic_episode(key):
    k_glyph, k_img, k_ep = jax.random.split(key, 3)
    glyphs = (jax.random.uniform(k_glyph, (20, 1, 16, 16, 1)) > 0.8).astype(jnp.float32)
    images = jnp.clip(glyphs + 0.3 * jax.random.normal(k_img, (20, 10, 16, 16, 1)), 0, 1)
    return tasks.sample_episode(k_ep, images, way=5, shot=1, query=3)

  episode = synthetic_episode(key)
  net = models.conv4(channels=channels)
  params = jax.jit(net.init)(jax.random.fold_in(key, 1), episode.support_x)
  loss = lambda p: models.protonet.episode_loss(net.apply, p, episode, way=5)[0]
  return loss, params


def ridge_hypergradient_panel(key, evograd_population: int, repeats: int) -> dict:
  """Hypergradients of a ridge regression's validation loss w.r.t. one log
  penalty per feature, at the inner optimum (closed form), vs the exact one."""
  k_x, k_w, k_v, k_e = jax.random.split(key, 4)
  dim, n = 8, 32
  w_true = jax.random.normal(k_w, (dim,))
  x_train, x_val = jax.random.normal(k_x, (2, n, dim))
  y_train = x_train @ w_true + 0.5 * jax.random.normal(k_v, (n,))
  y_val = x_val @ w_true
  train_loss = lambda p, h: (jnp.mean((x_train @ p["w"] - y_train) ** 2)
                             + jnp.sum(jnp.exp(h["log_l2"]) * p["w"] ** 2))
  val_loss = lambda p, h: jnp.mean((x_val @ p["w"] - y_val) ** 2)

  def solve(h):     # the inner optimum of train_loss: (X^T X / n + diag(l2)) w = X^T y / n
    a = x_train.T @ x_train / n + jnp.diag(jnp.exp(h["log_l2"]))
    return {"w": jnp.linalg.solve(a, x_train.T @ y_train / n)}

  hparams = {"log_l2": jnp.full((dim,), -1.0)}
  sigma, temperature = 0.03, 0.05
  # EvoGrad's mean is T1-T2's at this lookahead step (see estimators.evograd).
  eta = sigma**2 * (evograd_population - 1) / (evograd_population * temperature)
  theta = solve(hparams)
  exact = ravel_pytree(jax.grad(lambda h: val_loss(solve(h), h))(hparams))[0]
  fns = {
      "implicit (CG)": lambda p, k: estimators.implicit(train_loss, val_loss, p, hparams, k),
      f"t1_t2 (lr {eta:.3g})": lambda p, k: estimators.t1_t2(train_loss, val_loss, p, hparams,
                                                             k, inner_lr=eta),
      f"evograd (K = {evograd_population})": lambda p, k: estimators.evograd(
          train_loss, val_loss, p, hparams, k, population=evograd_population, sigma=sigma,
          temperature=temperature),
  }
  return {name: measure(lambda p, k, f=f: ravel_pytree(f(p, k))[0], theta, exact, repeats)
          for name, f in fns.items()}


def influence_panel(keys: int, horizon: int = 200, particles: int = 8, sigma: float = 0.01):
  """Influence balancing at theta = 0.5 from its steady state: each unrolled
  estimator's horizon-summed estimate, mean and standard error over ``keys``."""
  n, theta = 23, {"theta": jnp.array([0.5])}
  a = 0.5 * jnp.eye(n) + 0.5 * jnp.eye(n, k=1)
  signs = jnp.where(jnp.arange(n) < 10, 1.0, -1.0)

  def unroll(params, inner, key, window):
    s = a @ inner["s"] + params["theta"][0] * signs
    return 0.5 * (s[0] - 1.0) ** 2, {"s": s}

  start = lambda key: {"s": jnp.linalg.solve(jnp.eye(n) - a, 0.5 * signs)}
  exact = float(jax.grad(estimators.full_unroll(unroll, start, jax.random.PRNGKey(0),
                                                num_windows=horizon))(theta)["theta"][0])
  rows = {}
  for name in estimators.UNROLLED:
    est = getattr(estimators, name)
    kw = {} if name == "truncated_backprop" else {"sigma": sigma}

    def horizon_sum(key, est=est, kw=kw):
      state = estimators.init_state(est, start, key, num_particles=particles,
                                    num_windows=horizon, params=theta)
      def body(state, k):
        g, state = est(unroll, theta, state, k, init_inner=start, **kw)
        return state, g["theta"][0]
      return jax.lax.scan(body, state, jax.random.split(key, horizon))[1].sum()

    started = time.perf_counter()
    sums = np.asarray(jax.jit(jax.vmap(horizon_sum))(jax.random.split(jax.random.PRNGKey(3),
                                                                      keys)))
    rows[name] = {"mean": float(sums.mean()), "se": float(sums.std(ddof=1) / math.sqrt(keys)),
                  "time_s": time.perf_counter() - started}
  return {"exact": exact, "horizon": horizon, "particles": particles, "sigma": sigma,
          "keys": keys, "estimators": rows}


def estimator_table(population: int):
  """Every first-order estimator; the ES ones at the population given, the
  rest with their defaults (chunk_size="auto")."""
  return {
      "backprop": estimators.backprop,
      "forward_mode": estimators.forward_mode,
      "forward_gradient": functools.partial(estimators.forward_gradient, population=64),
      "es": functools.partial(estimators.es, sigma=1e-3, population=population),
      "es_wsr": functools.partial(estimators.es_wsr, sigma=1e-3, population=population),
      "finite_difference": functools.partial(estimators.finite_difference, step=1e-3,
                                             scheme="central"),
  }


def measure(fn, params, exact, repeats: int):
  """Time / memory of ``fn(params, key) -> flat gradient`` (and its accuracy)."""
  jitted = jax.jit(fn)
  key = jax.random.PRNGKey(7)
  compiled = jitted.lower(params, key).compile()
  memory = compiled.memory_analysis().temp_size_in_bytes
  grad = jax.block_until_ready(compiled(params, key))
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, jax.random.fold_in(key, i)))
    times.append(time.perf_counter() - start)
  out = {"time_s": float(np.median(times)), "temp_bytes": int(memory)}
  if exact is not None:
    out.update(cosine=float(grad @ exact / (jnp.linalg.norm(grad) * jnp.linalg.norm(exact))),
               norm_ratio=float(jnp.linalg.norm(grad) / jnp.linalg.norm(exact)),
               relative_error=float(jnp.linalg.norm(grad - exact) / jnp.linalg.norm(exact)))
  return out


def length_panel(lengths, meta_batch, population, repeats, forward_mode_max) -> dict:
  """Memory and time of one meta-gradient of the sine MAML objective vs T
  (forward_mode only up to ``forward_mode_max`` steps: its cost is D x T)."""
  flat = lambda g: ravel_pytree(g)[0]
  rows = {}
  for steps in lengths:
    key = jax.random.PRNGKey(0)
    loss, params, imaml = maml_objective(steps, meta_batch, key)
    ckpt_loss, _, _ = maml_objective(steps, meta_batch, key,
                                     checkpoint_every=max(1, math.isqrt(steps)))
    mixed_loss, _, _ = maml_objective(steps, meta_batch, key, mixed_mode=True)
    fns = {
        "backprop": lambda p, k: flat(estimators.backprop(loss, p, k)),
        "backprop, sqrt(T) checkpoints": lambda p, k: flat(estimators.backprop(ckpt_loss, p, k)),
        "backprop, mixed mode": lambda p, k: flat(estimators.backprop(mixed_loss, p, k)),
        "iMAML (implicit, 10 CG)": lambda p, k: flat(imaml(p, k)),
        f"es_wsr (P = {population})": lambda p, k: flat(estimators.es_wsr(
            loss, p, k, population=population)),
    }
    if steps <= forward_mode_max:
      fns["forward_mode"] = lambda p, k: flat(estimators.forward_mode(loss, p, k))
    rows[steps] = {name: measure(fn, params, None, repeats) for name, fn in fns.items()}
    common.say(f"  T = {steps:5d}: " + ", ".join(
        f"{n} {r['temp_bytes'] / 2**20:.2f} MiB / {r['time_s'] * 1e3:.1f} ms"
        for n, r in rows[steps].items()))
  return rows


def crossover(panel: dict, a: str, b: str):
  """The smallest T at which ``a`` needs more compiled memory than ``b``."""
  for steps in sorted(panel):
    if panel[steps][a]["temp_bytes"] > panel[steps][b]["temp_bytes"]:
      return steps
  return None


def plot(results: dict, hyper: dict, unrolled: dict, panel: dict, caption: str,
         population: int, png: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 2, figsize=(12, 8.6))
  # (a) first-order: cosine to the exact meta-gradient, norm ratio on each bar.
  ax = axes[0, 0]
  objectives = list(results)
  names = list(results[objectives[0]])
  width = 0.8 / len(objectives)
  for o, objective in enumerate(objectives):
    xs = np.arange(len(names)) + (o - (len(objectives) - 1) / 2) * width
    cos = [results[objective][n]["cosine"] for n in names]
    bars = ax.bar(xs, cos, width, label=objective)
    for bar, n in zip(bars, names):
      ax.text(bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 0) + 0.02,
              f"x{results[objective][n]['norm_ratio']:.2g}", ha="center", fontsize=7)
  ax.set_xticks(np.arange(len(names)), names, rotation=25, ha="right", fontsize=8)
  ax.set_ylim(-0.1, 1.35)
  ax.set_ylabel("cosine to exact meta-gradient")
  ax.set_title("(a) first-order estimators (label: |g| / |exact|)", fontsize=10)
  if len(objectives) > 1:
    ax.legend(fontsize=7, loc="upper center", ncol=len(objectives))
  # (b) hypergradients.
  ax = axes[0, 1]
  names = list(hyper)
  bars = ax.bar(names, [hyper[n]["cosine"] for n in names], color="tab:green")
  for bar, n in zip(bars, names):
    ax.text(bar.get_x() + bar.get_width() / 2, max(bar.get_height(), 0) + 0.02,
            f"x{hyper[n]['norm_ratio']:.2g}", ha="center", fontsize=7)
  ax.set_ylim(-0.1, 1.2)
  ax.set_ylabel("cosine to exact hypergradient")
  ax.set_title("(b) hypergradient estimators, ridge penalties (label: |g| / |exact|)",
               fontsize=10)
  ax.tick_params(axis="x", labelsize=8)
  # (c) unrolled: mean +- 2 se of the horizon estimate vs exact.
  ax = axes[1, 0]
  rows = unrolled["estimators"]
  names = list(rows)
  ax.bar(names, [rows[n]["mean"] for n in names], yerr=[2 * rows[n]["se"] for n in names],
         color="tab:purple", capsize=4)
  ax.axhline(unrolled["exact"], color="k", ls="--", lw=1)
  ax.axhline(0, color="gray", lw=0.5)
  ax.text(len(names) - 0.5, unrolled["exact"], " exact", va="bottom", ha="right", fontsize=8)
  ax.set_ylabel(f"gradient of the {unrolled['horizon']}-window loss")
  ax.set_title("(c) unrolled estimators, influence balancing, θ = 0.5 (mean ± 2 se)",
               fontsize=10)
  ax.tick_params(axis="x", labelsize=8)
  # (d) memory vs T.
  ax = axes[1, 1]
  lengths = sorted(panel)
  names = list(dict.fromkeys(n for t in lengths for n in panel[t]))
  for name in names:
    ts = [t for t in lengths if name in panel[t]]
    ax.plot(ts, [panel[t][name]["temp_bytes"] / 2**20 for t in ts], "o-", label=name)
  cross = crossover(panel, "backprop", f"es_wsr (P = {population})")
  if cross is not None:
    ax.axvline(cross, color="k", ls="--", lw=0.8)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("inner steps T (sine MAML)")
  ax.set_ylabel("meta-gradient memory (MiB, XLA temporaries)")
  ax.set_title("(d) memory vs inner-loop length" +
               (f" (backprop > es_wsr from T = {cross})" if cross else ""), fontsize=10)
  ax.legend(fontsize=7, loc="upper left")
  fig.text(0.5, 0.01, textwrap.fill(caption, 160), ha="center", va="bottom", fontsize=8)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  fig.savefig(png, dpi=100)
  plt.close(fig)


# ------------------------------------------------------------------ report

def scales(records: list[dict]) -> str:
  runs = under(records, "showdown")
  if not runs:
    return "*(no runs)*"
  res = runs[0]["results"]
  objectives = list(res)
  names = list(res[objectives[0]])
  rows = [[n] + [f"{res[o][n]['norm_ratio']:.3g} (cos {res[o][n]['cosine']:.3f})"
                 for o in objectives] for n in names]
  return (table(["estimator"] + [f"{o}: |g| / |∇L| (cosine)" for o in objectives], rows)
          + f"\n\nes and es_wsr at σ = 1e-3 with P = {runs[0]['flags']['population']}, "
          "forward_gradient with 64 directions, the rest exact. Command: "
          f"`{runs[0]['command']}`.")


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's report blocks (``examples.report``): {name: markdown}."""
  return {"scales": scales(records)}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, out="runs/showdown")
  parser.add_argument("--inner_steps", type=int, default=5, help="T of panel 1")
  parser.add_argument("--lengths", type=int, nargs="+", default=[1, 10, 100, 1000],
                      help="the inner-loop lengths T of panel 4")
  parser.add_argument("--forward_mode_max", type=int, default=100,
                      help="panel 4: forward_mode up to this T (its time is D x T JVP steps)")
  parser.add_argument("--meta_batch", type=int, default=4)
  parser.add_argument("--population", type=int, default=1024, help="ES members, panel 1")
  parser.add_argument("--panel2_population", type=int, default=64, help="es_wsr P, panel 4")
  parser.add_argument("--evograd_population", type=int, default=64, help="EvoGrad K, panel 2")
  parser.add_argument("--unrolled_keys", type=int, default=100, help="keys averaged, panel 3")
  parser.add_argument("--unrolled_horizon", type=int, default=200,
                      help="panel 3: windows per horizon (theta's effect takes ~50 to "
                           "propagate, so the exact gradient turns positive past that)")
  parser.add_argument("--channels", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per panel-1 entry")
  parser.add_argument("--protonet", action=argparse.BooleanOptionalAction, default=False,
                      help="panel 1: also the conv4 ProtoNet objective (adds ~3 min on CPU: "
                           "forward mode and FD over its 7,248 parameters)")
  args = parser.parse_args(argv)
  common.apply_smoke(args, argv, inner_steps=2, meta_batch=2, population=64, repeats=1,
                     channels=4, lengths=[2], panel2_population=8, protonet=False,
                     evograd_population=4, unrolled_keys=4, unrolled_horizon=8)
  common.positive_flags(args, "inner_steps", "meta_batch", "population", "channels", "repeats",
                        "panel2_population", "evograd_population", "unrolled_keys",
                        "unrolled_horizon", "forward_mode_max")
  if args.population % 2:
    raise SystemExit("error: --population must be even (es uses +/- pairs)")
  if min(args.lengths) < 1:
    raise SystemExit("error: --lengths must be >= 1")
  if args.unrolled_keys < 2:
    raise SystemExit("error: --unrolled_keys must be >= 2 (a standard error)")
  common.check_out(args)

  key = jax.random.PRNGKey(args.seed)
  objectives = {f"MAML sine (T={args.inner_steps})": maml_objective(args.inner_steps,
                                                                    args.meta_batch, key)[:2]}
  if args.protonet:
    objectives[f"ProtoNet conv4-{args.channels}"] = protonet_objective(args.channels, key)
  results = {}
  for name, (loss, params) in objectives.items():
    exact = jax.jit(lambda p: ravel_pytree(estimators.backprop(loss, p, None))[0])(params)
    common.say(f"\n(a) {name}: D = {exact.shape[0]} parameters, ES population {args.population}")
    common.say(f"{'estimator':<18} {'cosine':>8} {'|g|/|exact|':>12} {'time ms':>9} "
               f"{'temp MiB':>9}")
    rows = {}
    for est_name, est in estimator_table(args.population).items():
      fn = lambda p, k, e=est: ravel_pytree(e(loss, p, k))[0]
      r = rows[est_name] = measure(fn, params, exact, args.repeats)
      common.say(f"{est_name:<18} {r['cosine']:8.4f} {r['norm_ratio']:12.3g} "
                 f"{r['time_s'] * 1e3:9.2f} {r['temp_bytes'] / 2**20:9.2f}")
    results[name] = rows
  common.say("\n(b) hypergradients of ridge regression's validation loss (8 log-penalties):")
  hyper = ridge_hypergradient_panel(key, args.evograd_population, args.repeats)
  for name, r in hyper.items():
    common.say(f"{name:<18} cosine {r['cosine']:7.4f}  |g|/|exact| {r['norm_ratio']:7.3g}  "
               f"{r['time_s'] * 1e3:.2f} ms")
  common.say("\n(c) influence balancing at theta = 0.5, one step per window:")
  unrolled = influence_panel(args.unrolled_keys, horizon=args.unrolled_horizon)
  for name, r in unrolled["estimators"].items():
    common.say(f"{name:<18} {r['mean']:10.1f} +/- {r['se']:.1f} (exact {unrolled['exact']:.1f})")
  common.say(f"\n(d) meta-gradient memory and time vs inner-loop length (sine MAML, meta-batch "
             f"{args.meta_batch}):")
  # One timed call per point (after the compiling one).
  panel = length_panel(args.lengths, args.meta_batch, args.panel2_population, 1,
                       args.forward_mode_max)
  es_name = f"es_wsr (P = {args.panel2_population})"
  cross = crossover(panel, "backprop", es_name)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  caption = (f"(a) es and es_wsr at σ = 1e-3 with P = {args.population}, forward_gradient "
             f"with 64 directions, FD central, meta-batch {args.meta_batch} of 5-shot sine "
             f"tasks, T = {args.inner_steps} SGD steps of 0.01. (b) evograd σ = 0.03, τ = 0.05; "
             f"t1_t2 at the lookahead step EvoGrad's mean equals. "
             f"(c) {unrolled['particles']} particles, σ = {unrolled['sigma']}, horizon "
             f"{unrolled['horizon']} windows from the steady state, {unrolled['keys']} keys. (d) es_wsr P = "
             f"{args.panel2_population}; iMAML 10 CG steps; forward_mode up to T = "
             f"{args.forward_mode_max}. {jax.devices()[0].platform.upper()}, seed {args.seed}.")
  plot(results, hyper, unrolled, panel, caption, args.panel2_population, out / "showdown.png")
  longest = max(panel)
  summary = (f"backprop needs more memory than es_wsr from T = {cross} on; at T = {longest}: "
             f"backprop {panel[longest]['backprop']['temp_bytes'] / 2**20:.1f} MiB, "
             f"checkpointed {panel[longest]['backprop, sqrt(T) checkpoints']['temp_bytes'] / 2**20:.1f}"
             f" MiB, mixed mode {panel[longest]['backprop, mixed mode']['temp_bytes'] / 2**20:.1f}"
             f" MiB, iMAML {panel[longest]['iMAML (implicit, 10 CG)']['temp_bytes'] / 2**20:.1f} "
             f"MiB, es_wsr {panel[longest][es_name]['temp_bytes'] / 2**20:.1f} MiB"
             if cross else "backprop's memory stays below es_wsr's for these lengths")
  path = common.write_results(
      args, {"results": results, "hypergradient": hyper, "unrolled": unrolled,
             "memory_vs_length": {str(t): v for t, v in panel.items()},
             "crossover_backprop_vs_es_wsr": cross},
      started=started, module="examples.estimator_showdown", argv=argv)
  common.say(f"\n{summary}.\nes_wsr's and es's norms differ from the gradient's by design "
             f"(standardised weights; see the estimator table of docs/choosing.md).\n"
             f"wrote {out / 'showdown.png'} and {path} in {time.time() - started:.0f} s")


if __name__ == "__main__":
  main()
