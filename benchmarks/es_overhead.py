"""2. ES overhead against its limit: one es_wsr gradient with population P vs
P plain loss evaluations (vmapped, all at once) of the same conv4 ProtoNet
episode loss: the naive population evaluation. Below 1.0 the estimator beats
it (cache-sized chunks); the defaults (chunk_size="auto", normal noise) are the
row to read."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks import common
from metagrad import estimators, models, tasks


def problem(channels: int, size: int = 28, num_blocks: int = 4):
  net = models.conv4(channels=channels, num_blocks=num_blocks)
  images = jax.random.uniform(jax.random.PRNGKey(0), (20, 20, size, size, 1))
  ep = tasks.sample_episode(jax.random.PRNGKey(1), images, way=5, shot=5, query=5)
  params = jax.jit(net.init)(jax.random.PRNGKey(2), ep.support_x)
  loss = lambda p: models.protonet.episode_loss(net.apply, p, ep, way=5)[0]
  return loss, params


def run(quick: bool = False) -> dict:
  # Quick (tests): one conv block, 4 channels, 16x16 (compiles ~4x faster).
  channels, population, size, blocks = (4, 8, 16, 1) if quick else (16, 64, 28, 4)
  repeats = 2 if quick else 7
  loss, params = problem(channels, size, num_blocks=blocks)
  key = jax.random.PRNGKey(0)
  noise = jax.tree_util.tree_map(
      lambda p: 0.01 * jax.random.normal(key, (population, *p.shape)), params)

  def plain_evaluations(p, k):
    # The limit: P losses of already-perturbed parameters, nothing else.
    del k
    members = jax.tree_util.tree_map(lambda a, e: a[None] + e, p, noise)
    return jax.vmap(loss)(members)

  base = common.timeit(plain_evaluations, params, key, repeats=repeats)
  rows, data = [], {"plain_evaluations": base}
  variants = [(None, "normal"), (8, "normal"), ("auto", "normal"), ("auto", "table")]
  if not quick:
    variants.insert(2, (16, "normal"))
  for chunk, noise in variants:
    est = functools.partial(estimators.es_wsr, population=population, chunk_size=chunk,
                            noise=noise)
    t = common.timeit(lambda p, k: est(loss, p, k), params, key, repeats=repeats)
    ratio = t["median_s"] / base["median_s"]
    label = f"{chunk}" + (" (default)" if chunk == "auto" and noise == "normal" else "")
    data[f"chunk_{chunk}" + ("_table" if noise == "table" else "")] = {**t, "overhead": ratio}
    rows.append([population, label, noise, f"{t['median_s'] * 1e3:.1f}",
                 f"{t['min_s'] * 1e3:.1f}-{t['max_s'] * 1e3:.1f}",
                 f"{base['median_s'] * 1e3:.1f}", f"{ratio:.2f}"])
    print(f"es_wsr chunk {chunk} noise {noise}: {t['median_s'] * 1e3:.1f} ms vs plain "
          f"{base['median_s'] * 1e3:.1f} ms -> {ratio:.2f}", flush=True)
  table = common.markdown_table(["P", "chunk_size", "noise", "es_wsr ms (median)", "min-max ms",
                                 "P plain evals ms", "overhead (limit 1.0)"], rows)
  return {"channels": channels, "population": population, "results": data, "markdown": table}
