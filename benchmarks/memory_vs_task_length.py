"""1. Meta-gradient memory vs task length T (ES-ProtoNet TPU paper, II-E).

A conv4 MAML learner (5-way 1-shot Omniglot-sized episode, 28x28) adapted by
T SGD steps; the meta-gradient w.r.t. the initialisation by backprop,
backprop through ``adapt(checkpoint_every=sqrt T)`` (the same exact
gradient), backprop through ``adapt(mixed_mode=True)`` (MixFlow-MG's
forward-over-reverse inner-gradient derivatives, Kemaev et al. 2025,
arXiv:2505.00793; again the same gradient), both together, iMAML's implicit gradient (the proximal inner problem, 10 CG
iterations; exact at the inner optimum), forward_mode, es_wsr (P = 64) and
finite_difference; and the same learner with inner Adam instead of SGD
(``models.optax_rule(optax.adam)``: its two moment buffers ride along the
tape), by backprop and by mixed mode with checkpoints. Compiled peak
temporary bytes for every T; the median
time of one meta-gradient for the four exact reverse-mode variants (measured
in turns); peak process RSS of one real backprop / es_wsr call.
"""

from __future__ import annotations

import functools
import math
import textwrap

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from metagrad import estimators, models, tasks


def _episode_losses(channels: int, size: int, num_blocks: int):
  """(support loss, query loss, net, episode) of one fixed 5-way 1-shot episode."""
  net = models.conv4(channels=channels, num_classes=5, num_blocks=num_blocks)
  images = jax.random.uniform(jax.random.PRNGKey(0), (10, 20, size, size, 1))
  ep = tasks.sample_episode(jax.random.PRNGKey(1), images, way=5, shot=1, query=5)
  ce = lambda p, x, y: models.protonet.loss(net.apply(p, x), y)
  return (lambda p: ce(p, ep.support_x, ep.support_y),
          lambda p: ce(p, ep.query_x, ep.query_y), net, ep)


INNER_ADAM_LR = 1e-3


def problem(channels: int, steps: int, size: int = 28, checkpoint_every: int | None = None,
            num_blocks: int = 4, mixed_mode: bool = False, inner: str = "sgd"):
  """(meta-loss, initial parameters): T steps of inner ``"sgd"`` (lr 0.1) or
  ``"adam"`` (lr 1e-3) on the support loss, then the query loss."""
  support, query, net, ep = _episode_losses(channels, size, num_blocks)
  params = jax.jit(net.init)(jax.random.PRNGKey(2), ep.support_x)
  rule = (models.sgd(0.1) if inner == "sgd"
          else models.optax_rule(optax.adam(INNER_ADAM_LR, eps_root=1e-8)))

  def meta_loss(theta):
    adapted = models.adapt(support, theta, rule, {}, steps=steps,
                           checkpoint_every=checkpoint_every, mixed_mode=mixed_mode).params
    return query(adapted)
  return meta_loss, params


def imaml_gradient(channels: int, steps: int, size: int = 28, reg: float = 1.0,
                   num_blocks: int = 4):
  """``theta_0 -> iMAML meta-gradient``: T proximal SGD steps (no tape), then
  CG on Hessian-vector products at their end point."""
  support, query, _, _ = _episode_losses(channels, size, num_blocks)

  def meta_gradient(theta0, key):
    inner = estimators.proximal(support, jax.lax.stop_gradient(theta0), reg=reg)
    adapted = models.adapt(inner, theta0, models.sgd(0.1), {}, steps=steps).params
    return estimators.imaml(support, query, adapted, theta0, key, reg=reg, num_iterations=10)
  return meta_gradient


# The first-order estimators the ES-ProtoNet paper's memory comparison (II-E)
# covers, taken from the registry at this benchmark's settings.
BENCHMARKED = {"backprop": {}, "forward_mode": {"chunk_size": 64},
               "es_wsr": {"population": 64, "chunk_size": 8},
               "finite_difference": {"chunk_size": 64}}
ESTIMATORS = {name: functools.partial(estimators.REGISTRY[name].fn, **settings)
              for name, settings in BENCHMARKED.items()}

COLUMNS = ("backprop", "backprop_checkpointed", "mixed", "mixed_checkpointed", "imaml",
           "forward_mode", "es_wsr", "finite_difference", "adam", "adam_mixed_checkpointed")
# The four ways to the same exact meta-gradient by reverse mode: (checkpoint
# every sqrt T?, mixed mode?).
EXACT = {"backprop": (False, False), "backprop_checkpointed": (True, False),
         "mixed": (False, True), "mixed_checkpointed": (True, True)}
# Inner Adam instead of SGD, by plain backprop and by the most frugal exact way.
ADAM = {"adam": (False, False), "adam_mixed_checkpointed": (True, True)}


def adam_temp_bytes(channels: int, steps: int, size: int, blocks: int) -> dict:
  """Compiled temporaries of the exact meta-gradient through T inner Adam steps."""
  every = max(1, math.isqrt(steps))
  out = {}
  for name, (checkpointed, mixed) in ADAM.items():
    meta_loss, params = problem(channels, steps, size, num_blocks=blocks, mixed_mode=mixed,
                                checkpoint_every=every if checkpointed else None, inner="adam")
    out[name] = common.temp_bytes(lambda p, k, m=meta_loss: estimators.backprop(m, p, k),
                                  params, jax.random.PRNGKey(0))
  return out

RSS_CODE = textwrap.dedent("""
    import jax
    from benchmarks.memory_vs_task_length import problem, ESTIMATORS
    loss, params = problem({channels}, {steps})
    g = jax.jit(lambda p, k: ESTIMATORS["{name}"](loss, p, k))(params, jax.random.PRNGKey(0))
    jax.block_until_ready(g)
""")


def run(quick: bool = False) -> dict:
  # Quick (tests): one conv block of 4 channels on 16x16 inputs. The memory
  # properties checked hold for any depth, and a 4-block second-order program
  # compiles ~4x slower (10 s vs 2.6 s for T = 1 here).
  channels, size, blocks = (4, 16, 1) if quick else (16, 28, 4)
  lengths = (1, 10) if quick else (1, 10, 100, 1000)
  rss_names = () if quick else ("backprop", "es_wsr")
  rows, time_rows, data = [], [], {}
  for steps in lengths:
    loss, params = problem(channels, steps, size, num_blocks=blocks)
    dim = sum(x.size for x in jax.tree_util.tree_leaves(params))
    key = jax.random.PRNGKey(0)
    # Quick mode (tests) skips the slow-to-compile forward_mode / FD programs.
    names = ("es_wsr",) if quick else ("forward_mode", "es_wsr", "finite_difference")
    entry = {name: common.temp_bytes(lambda p, k, e=ESTIMATORS[name]: e(loss, p, k), params, key)
             for name in names}
    # The same exact meta-gradient four ways (sqrt(T) checkpoints, mixed
    # mode), timed in turns, and iMAML's.
    every = max(1, math.isqrt(steps))
    exact = {}
    for name, (checkpointed, mixed) in EXACT.items():
      meta_loss, _ = problem(channels, steps, size, num_blocks=blocks, mixed_mode=mixed,
                             checkpoint_every=every if checkpointed else None)
      exact[name] = lambda p, k, m=meta_loss: estimators.backprop(m, p, k)
    repeats = 1 if steps >= 1000 else 3
    timed = common.measure_interleaved(exact, params, key, repeats=repeats)
    entry["calls_timed"] = repeats
    for name, t in timed.items():
      entry[name] = t["temp_bytes"]
      entry[f"{name}_time_s"] = t["median_s"]
    entry["imaml"] = common.temp_bytes(imaml_gradient(channels, steps, size, num_blocks=blocks),
                                       params, key)
    entry.update(adam_temp_bytes(channels, steps, size, blocks))
    for name in rss_names:
      entry[f"{name}_rss"] = common.peak_rss_of(RSS_CODE.format(channels=channels, steps=steps,
                                                                name=name))
    data[steps] = entry
    print(f"T={steps}: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items()), flush=True)
  return {"parameters": dim, "channels": channels, "num_blocks": blocks, "by_T": data,
          "markdown": markdown(data)}


def markdown(data: dict) -> str:
  """The memory table and the time table of ``run``'s ``by_T``."""
  rows, time_rows = [], []
  for steps, entry in sorted(data.items(), key=lambda kv: int(kv[0])):
    ratio = lambda n: entry["backprop"] / entry[n]
    rows.append([steps] + [common.mib(entry[n]) if n in entry else "-" for n in COLUMNS]
                + [f"{ratio(n):.1f}" for n in ("backprop_checkpointed", "mixed",
                                               "mixed_checkpointed", "imaml")]
                + [f"{ratio('es_wsr'):.2f}"]
                + [f"{entry['adam'] / entry['backprop']:.2f}" if "adam" in entry else "-",
                   f"{entry['adam'] / entry['adam_mixed_checkpointed']:.1f}"
                   if "adam" in entry else "-"]
                + [common.mib(entry[f"{n}_rss"]) if f"{n}_rss" in entry else "-"
                   for n in ("backprop", "es_wsr")])
    time_rows.append([steps] + [f"{entry[f'{n}_time_s'] * 1e3:.0f}" for n in EXACT]
                     + [f"{entry[f'{n}_time_s'] / entry['backprop_time_s']:.2f}"
                        for n in list(EXACT)[1:]] + [entry.get("calls_timed", "-")])
  table = common.markdown_table(
      ["T"] + [f"{n} temp MiB" for n in COLUMNS]
      + [f"backprop / {n}" for n in ("checkpointed", "mixed", "mixed_checkpointed", "imaml",
                                     "es_wsr")]
      + ["adam / backprop (SGD)", "adam / adam_mixed_checkpointed"]
      + ["backprop RSS MiB", "es_wsr RSS MiB"], rows)
  times = common.markdown_table(
      ["T"] + [f"{n} ms" for n in EXACT] + [f"{n} / backprop" for n in list(EXACT)[1:]]
      + ["calls timed"], time_rows)
  return (table + "\n\nTime of one exact meta-gradient (median; checkpoints every sqrt(T) "
          "steps):\n\n" + times)


def remeasure_adam(path: str) -> None:
  """Adds the inner-Adam columns to a full-size run in ``path``
  (``results.json``) and re-renders its tables (compiles only; nothing else
  is re-measured)."""
  import json
  results = json.loads(open(path).read())
  entry = results["1. Meta-gradient memory vs task length"]
  size = 28 if entry["channels"] == 16 else 16
  for steps, row in entry["by_T"].items():
    row.update(adam_temp_bytes(entry["channels"], int(steps), size, entry["num_blocks"]))
    print(f"T={steps}: adam {row['adam'] / 2**20:.1f} MiB, adam mixed + checkpoints "
          f"{row['adam_mixed_checkpointed'] / 2**20:.1f} MiB", flush=True)
  entry["markdown"] = markdown(entry["by_T"])
  open(path, "w").write(json.dumps(results, indent=2, default=str))


def remeasure_rss(path: str) -> None:
  """Re-measures only the peak-RSS columns of a full-size run in ``path``
  (``results.json``) and re-renders its tables."""
  import json
  results = json.loads(open(path).read())
  entry = results["1. Meta-gradient memory vs task length"]
  for steps, row in entry["by_T"].items():
    row.setdefault("calls_timed", 1 if int(steps) >= 1000 else 3)   # what run() timed
    for name in ("backprop", "es_wsr"):
      row[f"{name}_rss"] = common.peak_rss_of(RSS_CODE.format(
          channels=entry["channels"], steps=int(steps), name=name))
    print(f"T={steps}: backprop {row['backprop_rss'] / 2**20:.1f} MiB, "
          f"es_wsr {row['es_wsr_rss'] / 2**20:.1f} MiB", flush=True)
  entry["markdown"] = markdown(entry["by_T"])
  open(path, "w").write(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
  import sys
  what = sys.argv[1] if len(sys.argv) > 1 else "rss"
  {"rss": remeasure_rss, "adam": remeasure_adam}[what](
      sys.argv[2] if len(sys.argv) > 2 else "benchmarks/results/results.json")
