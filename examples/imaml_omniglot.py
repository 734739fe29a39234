"""iMAML vs MAML vs first-order MAML on Omniglot N-way K-shot, at the same inner steps.

iMAML (Rajeswaran, Finn, Kakade & Levine 2019, "Meta-Learning with Implicit
Gradients", arXiv:1909.04630): each task adapts by ``--inner_steps`` SGD steps
on the proximal objective ``support_loss + reg/2 ||theta - theta_0||^2``
(eq. 4), and the meta-gradient comes from the implicit function theorem at the
adapted parameters with ``--cg_steps`` conjugate-gradient iterations on
Hessian-vector products (eq. 6), damped by ``--damping`` because the support
loss is not convex there: no tape of the inner loop is kept. MAML
backpropagates through the inner loop (second order); FO-MAML drops its
Hessian terms. All three meta-learn a conv4 classifier's initialisation with
Adam; the report adds each method's compiled meta-gradient memory (XLA
``memory_analysis``) and time per meta-step.

    python -m examples.imaml_omniglot --method imaml
    python -m examples.imaml_omniglot --method maml --mixed_mode
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from examples.reporting import Stat, commands, conv_net, device, table, under
from metagrad import estimators, models, tasks

METHODS = ("maml", "fomaml", "imaml")
LANCZOS_ITERATIONS = 80   # per task, for the support Hessian's extreme eigenvalues


# ------------------------------------------------------------------ report

RESIDUAL_HEADER = "inner gradient left after adaptation (× initial)"


def residual_cell(results: list[dict]) -> str:
  """|grad inner objective| after / before adaptation (median over test tasks)."""
  values = [x["inner_residual"] for x in results if "inner_residual" in x]
  return Stat(values).pm(1, 2) if values else "-"


SPECTRUM_HEADER = "λ_min(H_S) at θ*, median over tasks (initial → final meta-params)"
INDEFINITE_HEADER = "tasks with H_S + (λ + damping) I indefinite (final)"


def spectrum_cells(results: list[dict], solves: bool) -> list[str]:
  """The support Hessian's lowest eigenvalue at the adapted parameters and, for
  a method that ``solves`` a CG system (iMAML), how often it is indefinite
  (runs that measured it)."""
  measured = [x["support_hessian"] for x in results if "support_hessian" in x]
  if not measured:
    return ["-", "-"]
  median = lambda when: Stat(statistics.median(m[when]["min_eigenvalue"]) for m in measured)
  low = f"{median('initial').pm(1, 2)} → {median('final').pm(1, 2)}"
  if not solves:
    return [low, "-"]
  indefinite = Stat(m["final"]["fraction_indefinite"] for m in measured).pm(100, 0)
  return [low, f"{indefinite}% (below {measured[0]['final']['indefinite_below']:g})"]


def imaml(records: list[dict]) -> str:
  def row(label, res):
    return [label, Stat(x["test_accuracy"] for x in res).pm(100), residual_cell(res),
            *spectrum_cells(res, solves=label.startswith("imaml")),
            f"{Stat(x['meta_gradient_temp_bytes'] for x in res).mean / 2**20:.1f}",
            f"{Stat(x['meta_gradient_time_s'] for x in res).mean * 1e3:.0f}", len(res)]

  runs = under(records, "imaml")
  # MAML rows by how reverse mode differentiates the inner loop (--mixed_mode).
  rows = [row(m + (", mixed mode" if mixed else ""), res) for m in ("maml", "fomaml")
          for mixed in (False, True)
          if (res := [r["results"][m] for r in runs if m in r["results"]
                      and r["flags"]["mixed_mode"] == mixed])]
  # iMAML grouped by CG damping.
  imaml_runs = [r for r in runs if "imaml" in r["results"]]
  for damping in sorted({r["flags"]["damping"] for r in imaml_runs}):
    res = [r["results"]["imaml"] for r in imaml_runs if r["flags"]["damping"] == damping]
    rows.append(row(f"imaml, damping {damping:g}", res))
  if not rows:
    return "*(no runs)*"
  f = runs[0]["flags"]
  # iMAML at other inner-loop settings (shorter runs), labelled with them.
  other = sorted(under(records, "imaml_sweep"), key=lambda r: -r["flags"]["inner_lr"])
  for r in other:
    g = r["flags"]
    rows.append(row(f"imaml, {g['inner_steps']} steps of {g['inner_lr']:g}, λ = {g['reg']:g} "
                    f"({g['steps']} meta-steps, {g['test_tasks']} test tasks)",
                    [r["results"]["imaml"]]))
  runs = runs + other
  spectral = [(r["flags"], next(iter(r["results"].values()))) for r in runs]
  spectral = [(flags, res) for flags, res in spectral if "support_hessian" in res]
  counts = sorted({flags["spectrum_tasks"] for flags, _ in spectral})
  lanczos = sorted({res["lanczos_iterations"] for _, res in spectral})
  eigen_note = (f" Eigenvalues: {'/'.join(map(str, lanczos))} Lanczos steps on the support-loss "
                f"Hessian at each of {'/'.join(map(str, counts))} test episodes' adapted "
                f"parameters." if counts else "")
  return (table(["method", "test accuracy % (mean ± std)", RESIDUAL_HEADER, SPECTRUM_HEADER,
                 INDEFINITE_HEADER, "meta-gradient temp MiB", "meta-gradient ms", "seeds"], rows)
          + f"\n\nOmniglot {f['way']}-way {f['shot']}-shot, {conv_net(f)} with {f['channels']} "
          f"channels, "
          f"{f['inner_steps']} inner SGD steps (lr {f['inner_lr']}) for all three; iMAML λ = "
          f"{f['reg']}, {f['cg_steps']} CG iterations on H_S + (λ + damping) I; meta-batch "
          f"{f['meta_batch']}, Adam {f['meta_lr']}, {f['steps']} meta-steps, {f['test_tasks']} "
          f"test tasks.{eigen_note} Memory and "
          f"time are one meta-gradient of the meta-batch (XLA's compiled temporaries; median of "
          f"3 calls). {device(runs)}. Commands:\n\n" + commands(runs))


def report(records: list[dict], plots=None) -> dict[str, str]:
  """This example's report blocks (``examples.report``): {name: markdown}."""
  return {"imaml": imaml(records)}


def main(argv=None):
  started = time.time()
  parser = common.base_parser(__doc__, steps=2000, out="runs/imaml", omniglot=True)
  parser.add_argument("--method", choices=METHODS, default="imaml")
  parser.add_argument("--way", type=int, default=5)
  parser.add_argument("--shot", type=int, default=1)
  parser.add_argument("--query", type=int, default=5, help="query examples per class")
  # 10 steps of 0.1 rather than MAML's 5 of 0.4: the support loss's Hessian has
  # eigenvalues near 70 on these episodes (conv4 with batch-stat norm, 5 images),
  # so 0.4 oscillates instead of solving the inner problem, and the implicit
  # gradient is exact only at a solution (docs/reproductions/imaml.md).
  parser.add_argument("--inner_steps", type=int, default=10)
  parser.add_argument("--inner_lr", type=float, default=0.1)
  parser.add_argument("--reg", type=float, default=0.5, help="iMAML's proximal lambda")
  parser.add_argument("--cg_steps", type=int, default=5, help="iMAML's CG iterations")
  # The support Hessian at the adapted parameters has negative eigenvalues
  # (median about -1.4, 3% below -3 over 32 training episodes at initialisation),
  # so I + H_S / reg is indefinite at reg = 0.5 and CG's answer is not the
  # implicit gradient. reg + damping = 3 clears 97% of them (docs/reproductions/imaml.md).
  parser.add_argument("--damping", type=float, default=2.5,
                      help="iMAML: CG solves (H_S + (reg + damping) I) v = reg g, positive "
                           "definite once reg + damping > -lambda_min(H_S)")
  parser.add_argument("--mixed_mode", action=argparse.BooleanOptionalAction, default=False,
                      help="MAML: the inner loop's second-order terms by forward-over-reverse "
                           "(models.adapt(mixed_mode=True); the same meta-gradient, about one "
                           "parameter vector of memory per inner step)")
  parser.add_argument("--meta_lr", type=float, default=1e-3)
  parser.add_argument("--meta_batch", type=int, default=8)
  common.add_conv_flags(parser)
  parser.add_argument("--test_tasks", type=int, default=600)
  parser.add_argument("--spectrum_tasks", type=int, default=32,
                      help="test episodes on which to measure the support Hessian's extreme "
                           "eigenvalues at the adapted parameters (Lanczos), at the initial "
                           "and the final meta-parameters")
  args = parser.parse_args(argv)
  # Smoke: one conv block (the same code path; 4 blocks compile ~4x slower).
  common.apply_smoke(args, argv, steps=4, meta_batch=2, channels=4, num_blocks=1, test_tasks=8,
                     spectrum_tasks=2, log_every=2, checkpoint_every=2)
  common.positive_flags(args, "steps", "way", "shot", "query", "inner_steps", "inner_lr", "reg",
                        "cg_steps", "meta_lr", "meta_batch", "channels", "test_tasks",
                        "log_every", "checkpoint_every", "spectrum_tasks")
  common.nonnegative_flags(args, "damping")
  if args.test_tasks < 2:
    raise SystemExit("error: --test_tasks must be >= 2 for a confidence interval")
  images = tasks.load_omniglot(image_size=28, data_dir=common.data_dir(args), verbose=True)
  splits = {k: jnp.asarray(v) for k, v in tasks.omniglot_splits(images, split="standard").items()}
  net = models.conv4(channels=args.channels, num_blocks=args.num_blocks, num_classes=args.way)
  ce = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
  acc = lambda p, x, y: jnp.mean(jnp.argmax(net.apply(p, x), -1) == y)
  sample = lambda k, data: tasks.sample_episode(k, data, way=args.way, shot=args.shot,
                                                query=args.query)

  support_loss = lambda episode: (lambda p: ce(p, episode.support_x, episode.support_y))

  def inner_objective(theta, episode):
    """What the inner loop minimises: the support loss (iMAML: plus its proximal term)."""
    support = support_loss(episode)
    if args.method == "imaml":
      return estimators.proximal(support, jax.lax.stop_gradient(theta), reg=args.reg)
    return support

  def adapt(theta, episode):
    return models.adapt(inner_objective(theta, episode), theta, models.sgd(args.inner_lr), {},
                        steps=args.inner_steps, first_order=args.method == "fomaml",
                        mixed_mode=args.mixed_mode).params

  def task_gradient(theta, episode):
    """One task's meta-gradient and (query loss, query accuracy) after adaptation."""
    query = lambda p: ce(p, episode.query_x, episode.query_y)
    if args.method == "imaml":
      adapted = adapt(theta, episode)
      grads = estimators.imaml(support_loss(episode), query, adapted, theta, reg=args.reg,
                               num_iterations=args.cg_steps, damping=args.damping)
    else:
      grads, adapted = jax.grad(lambda t: (lambda a: (query(a), a))(adapt(t, episode)),
                                has_aux=True)(theta)
    return grads, (query(adapted), acc(adapted, episode.query_x, episode.query_y))

  def meta_gradient(theta, key, data):
    # Tasks one after another (lax.map): vmapping per-task conv kernels is
    # slow on CPU (see examples/meta_optimizers.py).
    grads, (loss, accuracy) = jax.lax.map(lambda k: task_gradient(theta, sample(k, data)),
                                          jax.random.split(key, args.meta_batch))
    return jax.tree_util.tree_map(lambda g: g.mean(0), grads), (loss.mean(), accuracy.mean())

  optimizer = optax.adam(args.meta_lr)

  def step(state, key, data):
    theta, opt_state = state
    grads, (loss, accuracy) = meta_gradient(theta, key, data)
    updates, opt_state = optimizer.update(grads, opt_state, theta)
    return (optax.apply_updates(theta, updates), opt_state), {"loss": loss, "acc": accuracy}

  theta = jax.jit(net.init)(jax.random.PRNGKey(args.seed), splits["train"][0, :2])
  # The meta-gradient's cost, measured once on its own: compiled temporaries and time.
  measured = jax.jit(meta_gradient).lower(theta, jax.random.PRNGKey(0), splits["train"]).compile()
  temp_bytes = int(measured.memory_analysis().temp_size_in_bytes)
  jax.block_until_ready(measured(theta, jax.random.PRNGKey(0), splits["train"]))
  times = []
  for i in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(measured(theta, jax.random.PRNGKey(i + 1), splits["train"]))
    times.append(time.perf_counter() - t0)
  common.say(f"{args.method}: meta-gradient of {args.meta_batch} tasks: "
             f"{temp_bytes / 2**20:.1f} MiB compiled temporaries, {np.median(times) * 1e3:.0f} ms")

  result = common.train(args, state=(theta, optimizer.init(theta)), step_fn=step,
                        name=f"Omniglot {args.way}-way {args.shot}-shot: {args.method}",
                        data=(splits["train"],), resume_may_change=("test_tasks",))

  @functools.partial(jax.jit, static_argnames="num")
  def evaluate(theta, key, num, data):
    def one(k):
      episode = sample(k, data)
      adapted = adapt(theta, episode)
      # How far the inner loop got: |grad of the inner objective| at the adapted
      # parameters over its value at the start (iMAML's gradient assumes ~0).
      inner = inner_objective(theta, episode)
      norm = lambda p: jnp.linalg.norm(jax.flatten_util.ravel_pytree(jax.grad(inner)(p))[0])
      return acc(adapted, episode.query_x, episode.query_y), norm(adapted) / norm(theta)
    return jax.lax.map(one, jax.random.split(key, num), batch_size=8)

  @functools.partial(jax.jit, static_argnames="num")
  def support_spectrum(theta, key, num, data):
    """Lowest and highest eigenvalue of each task's support-loss Hessian at its
    adapted parameters (what iMAML's CG inverts, less reg + damping), by
    LANCZOS_ITERATIONS Lanczos iterations (estimators.hessian_extreme_eigenvalues)."""
    def one(k):
      episode = sample(k, data)
      return estimators.hessian_extreme_eigenvalues(support_loss(episode), adapt(theta, episode),
                                                    jax.random.fold_in(k, 1),
                                                    num_iterations=LANCZOS_ITERATIONS)
    # One task at a time, like jax.hessian's dense check: the support loss is
    # piecewise smooth (ReLU, max-pool), and vmapping the conv over tasks
    # rounds differently, which on one of 32 test episodes flipped a max-pool
    # window whose two largest inputs were within 1e-6 and moved lambda_max
    # from 7.30 (the dense Hessian's) to 6.60.
    return jax.lax.map(one, jax.random.split(key, num))

  accs, residuals = map(np.asarray, evaluate(result.state[0],
                                             jax.random.PRNGKey(10_000 + args.seed),
                                             args.test_tasks, splits["test"]))
  spectrum = {name: tuple(map(np.asarray, support_spectrum(
                  params, jax.random.PRNGKey(20_000 + args.seed), args.spectrum_tasks,
                  splits["test"])))
              for name, params in (("initial", theta), ("final", result.state[0]))}
  # The implicit gradient needs H_S + (reg + damping) I positive definite.
  floor = -(args.reg + args.damping) if args.method == "imaml" else 0.0
  for name, (low, high) in spectrum.items():
    common.say(f"support Hessian at the adapted parameters ({name} meta-parameters, "
               f"{args.spectrum_tasks} test tasks): lambda_min median {np.median(low):.2f} "
               f"(lowest {np.min(low):.2f}), lambda_max median {np.median(high):.2f}; "
               f"lambda_min < {floor:g} on {np.mean(low < floor):.0%} of tasks")
  mean, ci = common.mean_ci95(accs)
  residual = float(np.median(residuals))
  common.say(f"{args.method}: test accuracy {mean:.4f} +/- {ci:.4f} ({args.test_tasks} tasks); "
             f"inner-objective gradient after adaptation: {residual:.3f} of its initial norm "
             "(median over test tasks)")
  path = common.write_results(
      args, {"results": {args.method: {
          "test_accuracy": mean, "test_ci95": ci, "diverged_at": result.diverged_at,
          "inner_residual": residual,
          "support_hessian": {name: {"min_eigenvalue": low.tolist(), "max_eigenvalue": high.tolist(),
                                     "indefinite_below": floor,
                                     "fraction_indefinite": float(np.mean(low < floor))}
                              for name, (low, high) in spectrum.items()},
          "lanczos_iterations": LANCZOS_ITERATIONS,
          "meta_gradient_temp_bytes": temp_bytes,
          "meta_gradient_time_s": float(np.median(times))}}},
      started=started, module="examples.imaml_omniglot", argv=argv)
  common.say(f"wrote {path}")


if __name__ == "__main__":
  main()
