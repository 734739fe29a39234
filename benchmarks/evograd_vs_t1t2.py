"""4. EvoGrad vs second-order T1-T2 as the base model grows (EvoGrad, arXiv:2106.10575, section 4.6, Fig. 7).

Two problems, widths x1..x5, hypergradient time and XLA compiled temporary
memory of EvoGrad (K = 2, sigma = 1e-3, tau = 0.05; gaussian and sign noise)
and of T1-T2, with their ratios per size:

* **Meta-Weight-Net** (the paper's 4.6 setting, scaled to a CPU): a CIFAR-shaped
  ResNet (3 stages of residual blocks, 16k/32k/64k filters for width xk,
  batch 32 of 32x32x3 images) whose per-example training losses are
  re-weighted by an MLP (1-100-1, sigmoid); the MLP is the hyperparameter.
  The candidates' losses depend on it only through the re-weighting, so EvoGrad
  backpropagates through the ResNet once (at theta*), T1-T2 through a gradient.
* **Input scaling on an MLP** (784-256k-256k-10, batch 128; 784 feature scales
  applied to the training inputs): a weight-dominated model whose
  hyperparameter sits under the whole network, the regime least favourable to
  EvoGrad, which keeps K perturbed copies of the weights.
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from metagrad import estimators


def meta_weight_net_problem(width: int, batch: int = 32, base: int = 16,
                            blocks_per_stage: int = 1):
  """(train_loss, val_loss, params, hparams): MWN on a ResNet with ``base * width`` filters."""
  def resnet(x):
    x = jax.nn.relu(hk.Conv2D(base * width, 3)(x))
    for stage, channels in enumerate((base * width, 2 * base * width, 4 * base * width)):
      for block in range(blocks_per_stage):
        stride = 2 if stage > 0 and block == 0 else 1
        y = hk.Conv2D(channels, 3)(jax.nn.relu(hk.Conv2D(channels, 3, stride=stride)(x)))
        if stride > 1 or x.shape[-1] != channels:
          x = hk.Conv2D(channels, 1, stride=stride)(x)
        x = jax.nn.relu(x + y)
    return hk.Linear(10)(x.mean((1, 2)))

  net = hk.without_apply_rng(hk.transform(resnet))
  weighting = hk.without_apply_rng(hk.transform(
      lambda losses: jax.nn.sigmoid(hk.nets.MLP([100, 1])(losses[:, None]))[:, 0]))
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  xt, xv = (jax.random.normal(k, (batch, 32, 32, 3)) for k in keys[:2])
  yt, yv = (jax.random.randint(k, (batch,), 0, 10) for k in keys[2:4])
  params = jax.jit(net.init)(keys[4], xt)
  hparams = weighting.init(keys[5], jnp.zeros(batch))
  ce = optax.softmax_cross_entropy_with_integer_labels

  def train_loss(p, h):
    losses = ce(net.apply(p, xt), yt)
    return jnp.mean(weighting.apply(h, losses) * losses)

  val_loss = lambda p, h: ce(net.apply(p, xv), yv).mean()
  return train_loss, val_loss, params, hparams


def input_scaling_problem(width: int, batch: int = 128, base: int = 256):
  """(train_loss, val_loss, params, hparams): 784 input scales, MLP of ``base * width`` units."""
  net = hk.without_apply_rng(hk.transform(
      lambda x: hk.nets.MLP([base * width, base * width, 10])(x)))
  kx, kv, ky = jax.random.split(jax.random.PRNGKey(0), 3)
  xt, xv = jax.random.normal(kx, (batch, 784)), jax.random.normal(kv, (batch, 784))
  y = jax.random.randint(ky, (batch,), 0, 10)
  params = jax.jit(net.init)(jax.random.PRNGKey(1), xt)
  ce = lambda p, x: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
  return (lambda p, h: ce(p, xt * h[None, :])), (lambda p, h: ce(p, xv)), params, jnp.ones(784)


PROBLEMS = {"meta_weight_net": meta_weight_net_problem, "input_scaling_mlp": input_scaling_problem}
QUICK_BASE = {"meta_weight_net": 2, "input_scaling_mlp": 32}


def _hypergradients(train_loss, val_loss):
  evo = lambda noise: (lambda p, h, key: estimators.evograd(
      train_loss, val_loss, p, h, key, population=2, sigma=1e-3, temperature=0.05, noise=noise))
  # (result keys keep the name "gaussian" of the committed results: noise="normal")
  return {"evograd_gaussian": evo("normal"), "evograd_sign": evo("sign"),
          "t1_t2": lambda p, h, key: estimators.t1_t2(train_loss, val_loss, p, h, key,
                                                      inner_lr=0.1)}


def compare(problem, width: int, repeats: int) -> dict:
  """Times and compiled memory of every hypergradient at one size, with ratios."""
  train_loss, val_loss, params, hparams = problem(width)
  key = jax.random.PRNGKey(2)
  entry = {"parameters": sum(x.size for x in jax.tree_util.tree_leaves(params)),
           "hyperparameters": sum(x.size for x in jax.tree_util.tree_leaves(hparams))}
  for name, fn in _hypergradients(train_loss, val_loss).items():
    entry[name] = common.measure(fn, params, hparams, key, repeats=repeats)
  for noise in ("gaussian", "sign"):
    evo = entry[f"evograd_{noise}"]
    entry[f"time_ratio_t1t2_over_evograd_{noise}"] = entry["t1_t2"]["median_s"] / evo["median_s"]
    entry[f"memory_ratio_t1t2_over_evograd_{noise}"] = (entry["t1_t2"]["temp_bytes"]
                                                        / evo["temp_bytes"])
  return entry


def _row(width: int, e: dict) -> list:
  ms = lambda name: f"{e[name]['median_s'] * 1e3:.1f}"
  mem = lambda name: common.mib(e[name]["temp_bytes"])
  return [f"x{width}", f"{e['parameters']:,}", ms("evograd_gaussian"), ms("evograd_sign"),
          ms("t1_t2"), f"**{e['time_ratio_t1t2_over_evograd_gaussian']:.2f}**",
          f"{e['time_ratio_t1t2_over_evograd_sign']:.2f}",
          mem("evograd_gaussian"), mem("t1_t2"),
          f"**{e['memory_ratio_t1t2_over_evograd_gaussian']:.2f}**"]


def run(quick: bool = False) -> dict:
  widths = (1,) if quick else (1, 2, 3, 4, 5)
  repeats = 2 if quick else 5
  header = ["width", "params", "EvoGrad ms", "EvoGrad (sign) ms", "T1-T2 ms",
            "time T1-T2/EvoGrad", "time T1-T2/EvoGrad (sign)", "EvoGrad temp MiB",
            "T1-T2 temp MiB", "memory T1-T2/EvoGrad"]
  data, tables = {}, []
  for name, problem in PROBLEMS.items():
    # Quick (tests): batch 8 and 1/8 of the filters or units.
    sized = functools.partial(problem, batch=8, base=QUICK_BASE[name]) if quick else problem
    rows, data[name] = [], {}
    for width in widths:
      data[name][width] = compare(sized, width, repeats)
      rows.append(_row(width, data[name][width]))
      print(f"{name} x{width}: {rows[-1]}", flush=True)
    tables.append(f"**{name}** (ratios > 1: EvoGrad is cheaper)\n\n"
                  + common.markdown_table(header, rows))
  return {"results": data, "markdown": "\n\n".join(tables)}
