"""9. chunk_size="auto" against a grid of fixed chunks.

es_wsr (P = 64 members, no antithetic pairs: 64 units) on the conv4-16
ProtoNet episode of benchmark 2 and on MLP regression losses with D = 1e3 ..
1e6 parameters (64 -> h -> 1 on 256 examples); median time of one jitted
estimator call (5 calls, or as many as fit in 1 s for fast ones) for
chunk_size in {1, 2, 4, ..., 64 = all at once} and for "auto", which reports
the chunk it chose. Within 10% of the best fixed chunk is the target; when
"auto" picks one of the grid's chunks the two timings are of the same program,
so their ratio shows the timing noise.
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp

from benchmarks import common
from benchmarks.es_overhead import problem as protonet_problem
from metagrad import estimators
from metagrad.estimators import _population

POPULATION = 64


def mlp_problem(dim: int):
  hidden = max(1, round((dim - 1) / 66))
  net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([hidden, 1])(x)))
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 64))
  y = jnp.sin(x[:, :1])
  params = net.init(jax.random.PRNGKey(1), x)
  return (lambda p: jnp.mean((net.apply(p, x) - y) ** 2)), params


def run(quick: bool = False) -> dict:
  problems = {"conv4-16 ProtoNet": lambda: protonet_problem(4 if quick else 16, 16 if quick else 28)}
  for dim in ((100_000,) if quick else (1_000, 10_000, 100_000, 1_000_000)):
    problems[f"MLP D={dim:,}"] = functools.partial(mlp_problem, dim)
  chunks = (4, None) if quick else (1, 2, 4, 8, 16, 32, None)
  repeats = 2 if quick else 5
  settle = 0.0 if quick else 1.0   # millisecond calls: repeat for 1 s for a stable median
  rows, data = [], {}
  for name, make in problems.items():
    loss, params = make()
    dim = sum(x.size for x in jax.tree_util.tree_leaves(params))
    key = jax.random.PRNGKey(0)
    times = {}
    for chunk in chunks:
      fn = lambda p, k, c=chunk: estimators.es_wsr(loss, p, k, population=POPULATION, chunk_size=c)
      times[str(chunk)] = common.measure(fn, params, key, repeats=repeats, min_total_s=settle)
    auto = common.measure(lambda p, k: estimators.es_wsr(loss, p, k, population=POPULATION),
                          params, key, repeats=repeats, min_total_s=settle)
    _, unit_bytes, chosen = _population.last_auto
    best = min(times, key=lambda c: times[c]["median_s"])
    ratio = auto["median_s"] / times[best]["median_s"]
    data[name] = {"dim": dim, "fixed": times, "auto": auto, "auto_chunk": chosen,
                  "unit_bytes": unit_bytes, "best_chunk": best, "auto_over_best": ratio}
    rows.append([name, f"{dim:,}", f"{unit_bytes / 2**20:.2f}"]
                + [f"{times[str(c)]['median_s'] * 1e3:.1f}" for c in chunks]
                + [f"{chosen} ({auto['median_s'] * 1e3:.1f})", best, f"**{ratio:.2f}**"])
    print(f"{name}: best chunk {best}, auto -> {chosen} ({ratio:.2f} x best)", flush=True)
  table = common.markdown_table(
      ["loss", "D", "one member MiB (XLA temp)"]
      + [f"chunk {c if c else 'all'} ms" for c in chunks]
      + ["auto -> chunk (ms)", "best fixed", "auto / best"], rows)
  return {"population": POPULATION, "results": data, "markdown": table}
