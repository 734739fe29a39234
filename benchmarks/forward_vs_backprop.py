"""5. forward_mode vs backprop time as D grows, and forward_mode's chunk_size trade-off."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks import common
from metagrad import estimators, models


def problem(hidden: int):
  net = models.mlp(hidden=(hidden, hidden))
  x = jnp.linspace(-5, 5, 32)[:, None]
  params = jax.jit(net.init)(jax.random.PRNGKey(0), x)
  return (lambda p: jnp.mean((net.apply(p, x) - jnp.sin(x)) ** 2)), params


def run(quick: bool = False) -> dict:
  hiddens = (4, 8) if quick else (8, 16, 32, 64)
  chunks = (16, None) if quick else (1, 16, 256, None)
  repeats = 2 if quick else 5
  rows, chunk_rows, data = [], [], {"by_D": {}, "chunks": {}}
  for hidden in hiddens:
    loss, params = problem(hidden)
    dim = sum(x.size for x in jax.tree_util.tree_leaves(params))
    bp = common.timeit(lambda p: estimators.backprop(loss, p, None), params, repeats=repeats)
    fm = common.timeit(lambda p: estimators.forward_mode(loss, p, None, chunk_size=256), params,
                       repeats=repeats)
    ratio = fm["median_s"] / bp["median_s"]
    data["by_D"][dim] = {"backprop": bp, "forward_mode": fm, "ratio": ratio}
    rows.append([f"{dim:,}", f"{bp['median_s'] * 1e3:.3f}", f"{fm['median_s'] * 1e3:.2f}",
                 f"{ratio:.0f}"])
    print(f"D={dim}: backprop {bp['median_s'] * 1e3:.3f} ms, forward_mode {fm['median_s'] * 1e3:.2f} ms",
          flush=True)
  loss, params = problem(hiddens[-1])
  for chunk in chunks:
    fn = lambda p, c=chunk: estimators.forward_mode(loss, p, None, chunk_size=c)
    m = data["chunks"][str(chunk)] = common.measure(fn, params, repeats=repeats)
    chunk_rows.append([str(chunk), f"{m['median_s'] * 1e3:.2f}", common.mib(m["temp_bytes"])])
  return {"results": data,
          "markdown": common.markdown_table(["D", "backprop ms", "forward_mode ms (chunk 256)",
                                             "forward / backprop"], rows)
          + "\n\nforward_mode chunk_size trade-off (largest D):\n\n"
          + common.markdown_table(["chunk_size", "ms (median)", "temp MiB"], chunk_rows)}
