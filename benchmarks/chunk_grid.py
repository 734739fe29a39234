"""9. chunk_size="auto" against a grid of fixed chunks.

es_wsr (P = 64 members, no antithetic pairs: 64 units) on the conv4-16
ProtoNet episode of benchmark 2, on MLP regression losses with D = 1e3 ..
1e6 parameters (64 -> h -> 1 on 256 examples) and on benchmark 3's
elementwise loss at D = 1e6; median time of one jitted estimator call (7
calls, or as many as fit in 1 s for fast ones; the programs' calls taken in
turns) for chunk_size in {1, 2, 4, ..., 64 = all at once} and for "auto",
which reports the chunk it chose and what it saw of one member (XLA's
temporary bytes and flops per parameter). Within 10% of the best fixed chunk
is the target. When "auto" compiles to the same program as one of the grid's
chunks (checked on the lowered program text), auto / best uses that chunk's
timing, and the separately re-timed auto call over it shows the machine's
timing noise.
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp

from benchmarks import common, vs_evosax
from benchmarks.es_overhead import problem as protonet_problem
from metagrad import estimators

POPULATION = 64


def mlp_problem(dim: int):
  hidden = max(1, round((dim - 1) / 66))
  net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([hidden, 1])(x)))
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 64))
  y = jnp.sin(x[:, :1])
  params = net.init(jax.random.PRNGKey(1), x)
  return (lambda p: jnp.mean((net.apply(p, x) - y) ** 2)), params


def run(quick: bool = False) -> dict:
  # Quick (tests): the ProtoNet embedding shrunk to one block of 4 channels on 16x16.
  problems = {"conv4-16 ProtoNet": ((lambda: protonet_problem(4, 16, num_blocks=1)) if quick
                                    else (lambda: protonet_problem(16, 28)))}
  for dim in ((100_000,) if quick else (1_000, 10_000, 100_000, 1_000_000)):
    problems[f"MLP D={dim:,}"] = functools.partial(mlp_problem, dim)
  if not quick:  # benchmark 3's elementwise loss: ~7 flops per parameter
    problems["elementwise D=1,000,000"] = lambda: (vs_evosax.loss_fn, jnp.zeros(1_000_000))
  chunks = (4, None) if quick else (1, 2, 4, 8, 16, 32, None)
  repeats = 2 if quick else 7
  settle = 0.0 if quick else 1.0   # millisecond calls: repeat for 1 s for a stable median
  rows, data = [], {}
  for name, make in problems.items():
    loss, params = make()
    dim = sum(x.size for x in jax.tree_util.tree_leaves(params))
    key = jax.random.PRNGKey(0)
    fns = {str(chunk): (lambda p, k, c=chunk: estimators.es_wsr(loss, p, k, population=POPULATION,
                                                              chunk_size=c))
           for chunk in chunks}
    fns["auto"] = lambda p, k: estimators.es_wsr(loss, p, k, population=POPULATION)
    # Calls in turns: a slow spell of the machine lands on every chunk alike.
    times = common.measure_interleaved(fns, params, key, repeats=repeats, min_total_s=settle)
    auto = times.pop("auto")
    # The plan "auto" chose, static in the returned info (tracing shows it).
    plan = jax.eval_shape(lambda p, k: estimators.es_wsr(loss, p, k, population=POPULATION,
                                                         return_info=True)[1],
                          params, key).chunk_plan
    unit_bytes, chosen, unit_flops = plan.unit_bytes, plan.chunk_size, plan.unit_flops
    best = min(times, key=lambda c: times[c]["median_s"])
    # When "auto" compiles to the program of a grid chunk, that chunk's timing
    # is auto's; re-timing the same program only shows the machine's noise.
    same = str(chosen) in times and common.same_program(fns["auto"], fns[str(chosen)],
                                                        params, key)
    auto_time = times[str(chosen)] if same else auto
    ratio = auto_time["median_s"] / times[best]["median_s"]
    retimed = auto["median_s"] / times[str(chosen)]["median_s"] if same else None
    data[name] = {"dim": dim, "fixed": times, "auto": auto, "auto_chunk": chosen,
                  "unit_bytes": unit_bytes, "unit_flops": unit_flops, "best_chunk": best,
                  "auto_same_program_as_chunk": same, "auto_over_best": ratio,
                  "retimed_auto_over_its_chunk": retimed}
    per_param = "?" if unit_flops is None else f"{unit_flops / dim:.0f}"
    rows.append([name, f"{dim:,}", f"{unit_bytes / 2**20:.2f}", per_param]
                + [f"{times[str(c)]['median_s'] * 1e3:.1f}" for c in chunks]
                + [f"{chosen}" + (" (same program)" if same else ""), best, f"**{ratio:.2f}**",
                   "-" if retimed is None else f"{retimed:.2f}"])
    print(f"{name}: best chunk {best}, auto -> {chosen} ({ratio:.2f} x best)", flush=True)
  table = common.markdown_table(
      ["loss", "D", "one member MiB (XLA temp)", "one member flops / D"]
      + [f"chunk {c if c else 'all'} ms" for c in chunks]
      + ["auto -> chunk", "best fixed", "auto / best",
         "re-timed auto / its chunk (noise)"], rows)
  return {"population": POPULATION, "results": data, "markdown": table}
