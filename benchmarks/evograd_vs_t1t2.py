"""4. EvoGrad vs second-order T1-T2 as the base model grows (evograd.txt 4.6, Fig. 7).

A 2-hidden-layer MLP classifier (widths 256 x k, k = 1..5) on 784-d inputs;
the hyperparameters are a feature-wise input transformation (784 scales
applied to the training inputs, like LFT's). Hypergradient time and compiled
memory of EvoGrad (K = 2) and T1-T2, and their ratios, per size."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from metagrad import estimators


def problem(width: int, batch: int = 128):
  net = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP([width, width, 10])(x)))
  kx, kv, ky = jax.random.split(jax.random.PRNGKey(0), 3)
  xt, xv = jax.random.normal(kx, (batch, 784)), jax.random.normal(kv, (batch, 784))
  y = jax.random.randint(ky, (batch,), 0, 10)
  params = jax.jit(net.init)(jax.random.PRNGKey(1), xt)
  ce = lambda p, x: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
  train_loss = lambda p, h: ce(p, xt * h)
  val_loss = lambda p, h: ce(p, xv)
  return train_loss, val_loss, params, jnp.ones(784)


def run(quick: bool = False) -> dict:
  multipliers = (1, 2) if quick else (1, 2, 3, 4, 5)
  repeats = 2 if quick else 7
  rows, data = [], {}
  for k in multipliers:
    width = (32 if quick else 256) * k
    tl, vl, params, hparams = problem(width)
    key = jax.random.PRNGKey(2)
    evo = lambda p, h, key: estimators.evograd(tl, vl, p, h, key, population=2, sigma=1e-3,
                                               temperature=0.05)
    t12 = lambda p, h, key: estimators.t1_t2(tl, vl, p, h, key, inner_lr=0.1)
    entry = {}
    for name, fn in (("evograd", evo), ("t1_t2", t12)):
      entry[name] = {**common.timeit(fn, params, hparams, key, repeats=repeats),
                     "temp_bytes": common.temp_bytes(fn, params, hparams, key)}
    entry["time_ratio_t1t2_over_evograd"] = entry["t1_t2"]["median_s"] / entry["evograd"]["median_s"]
    entry["memory_ratio_t1t2_over_evograd"] = (entry["t1_t2"]["temp_bytes"]
                                               / entry["evograd"]["temp_bytes"])
    dim = sum(x.size for x in jax.tree_util.tree_leaves(params))
    data[k] = {"width": width, "parameters": dim, **entry}
    rows.append([f"x{k}", f"{dim:,}", f"{entry['evograd']['median_s'] * 1e3:.2f}",
                 f"{entry['t1_t2']['median_s'] * 1e3:.2f}",
                 f"{entry['time_ratio_t1t2_over_evograd']:.2f}",
                 common.mib(entry["evograd"]["temp_bytes"]), common.mib(entry["t1_t2"]["temp_bytes"]),
                 f"{entry['memory_ratio_t1t2_over_evograd']:.2f}"])
    print(f"width x{k}: " + str(rows[-1]), flush=True)
  table = common.markdown_table(["width", "params", "EvoGrad ms", "T1-T2 ms", "time T1-T2/EvoGrad",
                                 "EvoGrad temp MiB", "T1-T2 temp MiB", "memory T1-T2/EvoGrad"], rows)
  return {"results": data, "markdown": table}
