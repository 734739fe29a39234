"""6. EvoGrad noise vs cost on the rotation task: more copies (K) or more keys (M)?

A LeNet is trained upright for ``warmup`` steps on the Omniglot rotation task
of ``examples/evograd_rotation.py`` (lambda = 0); at that (theta, lambda) the
hypergradient d l_V / d lambda is estimated over many keys by EvoGrad with K
copies (one key) and by the mean of M independent K = 2 draws. For each: mean,
standard deviation, signal-to-noise ratio |mean| / std, time per call, and the
cost of reaching the same variance as one K = 2 draw divided by S^2 -- i.e.
time x variance, the figure of merit (lower is better).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from metagrad import estimators, models, tasks


def setup(quick: bool):
  images = tasks.load_omniglot()
  classes = 20 if quick else 200
  task = tasks.rotation_task(images, num_classes=classes, num_train=15, num_val=2, seed=0)
  net = models.lenet(classes)
  ce = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()
  theta = net.init(jax.random.PRNGKey(0), task.train_x[:2])
  opt = optax.adam(3e-4)

  @jax.jit
  def warm(theta, opt_state, key):
    idx = jax.random.choice(key, task.train_y.shape[0], (64,), replace=False)
    g = jax.grad(ce)(theta, task.train_x[idx], task.train_y[idx])
    updates, opt_state = opt.update(g, opt_state)
    return optax.apply_updates(theta, updates), opt_state

  state = opt.init(theta)
  for i in range(5 if quick else 300):
    theta, state = warm(theta, state, jax.random.PRNGKey(i))
  batch = jax.random.choice(jax.random.PRNGKey(99), task.train_y.shape[0], (64,), replace=False)
  xt, yt = task.train_x[batch], task.train_y[batch]
  xv, yv = task.val_x[:64], task.val_y[:64]
  train_loss = lambda p, lam: ce(p, tasks.rotate(xt, lam), yt)
  val_loss = lambda p, lam: ce(p, xv, yv)
  return theta, train_loss, val_loss


def run(quick: bool = False) -> dict:
  theta, train_loss, val_loss = setup(quick)
  lam = jnp.float32(0.0)
  num_keys = 16 if quick else 512
  configs = [(2, 1), (4, 1), (8, 1), (16, 1), (2, 2), (2, 4), (2, 8)]
  if quick:
    configs = [(2, 1)]    # the code path; the grid is the full run's

  def estimate(K, M, key):
    draws = [estimators.evograd(train_loss, val_loss, theta, lam, jax.random.fold_in(key, m),
                                population=K, sigma=1e-3, temperature=0.05, noise="sign")
             for m in range(M)]
    return sum(draws) / M

  # One compiled program (called eagerly, every op of the second-order
  # hypergradient would compile on its own).
  t1t2 = float(jax.jit(lambda t, h: estimators.t1_t2(train_loss, val_loss, t, h,
                                                       inner_lr=1.0))(theta, lam))
  rows, data = [], {"t1_t2_inner_lr_1": t1t2}
  base_merit = None
  for K, M in configs:
    fn = jax.jit(functools.partial(estimate, K, M))
    # Keys streamed a few at a time: vmapping all of them would hold every
    # member's activations at once.
    many = jax.jit(lambda ks: jax.lax.map(functools.partial(estimate, K, M), ks, batch_size=4))
    values = np.asarray(many(jax.random.split(jax.random.PRNGKey(1), num_keys)), np.float64)
    t = common.timeit(fn, jax.random.PRNGKey(2), repeats=3 if quick else 20)
    mean, std = values.mean(), values.std(ddof=1)
    merit = t["median_s"] * std**2
    base_merit = merit if base_merit is None else base_merit
    entry = {"mean": mean, "std": std, "snr": abs(mean) / std, "time_s": t["median_s"],
             "time_x_variance_vs_K2": merit / base_merit}
    data[f"K{K}_M{M}"] = entry
    rows.append([K, M, f"{mean:.3g}", f"{std:.3g}", f"{entry['snr']:.2f}",
                 f"{t['median_s'] * 1e3:.1f}", f"{entry['time_x_variance_vs_K2']:.2f}"])
    print(f"K={K} M={M}: mean {mean:.3g} std {std:.3g} snr {entry['snr']:.2f} "
          f"{t['median_s'] * 1e3:.1f} ms", flush=True)
  table = common.markdown_table(
      ["K copies", "M keys", "mean", "std", "SNR", "ms / call", "time x variance (vs K=2, M=1)"],
      rows)
  return {"keys": num_keys, "results": data, "markdown": table}
