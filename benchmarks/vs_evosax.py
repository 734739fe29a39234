"""3. metagrad vs evosax (optional extra): the same loss, D, P and sigma.

evosax's OpenAI-ES ``ask -> evaluate -> tell`` (centered ranks, SGD) against
``estimators.es(shaping="centered_rank")`` + ``optax.sgd``; both one jitted step.
Time per step (median of repeats) and compiled temporary memory, as ratios
from the same run, for D = 1e4 .. 1e6."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from metagrad import estimators


def loss_fn(x):
  # Elementwise O(D) work: the ES machinery, not the loss, dominates the step.
  return jnp.mean((x - 0.5) ** 2 + 0.1 * jnp.sin(3.0 * x))


def run(quick: bool = False) -> dict:
  try:
    from evosax.algorithms import Open_ES
  except ImportError:
    return {"skipped": "evosax not installed (pip install -e '.[bench]')", "markdown": ""}
  dims = (1_000, 10_000) if quick else (10_000, 100_000, 1_000_000)
  population, sigma, lr = (8 if quick else 64), 0.01, 0.05
  repeats = 2 if quick else 7
  rows, data = [], {}
  for dim in dims:
    x0 = jnp.zeros(dim)
    strategy = Open_ES(population_size=population, solution=x0, optimizer=optax.sgd(lr),
                       std_schedule=optax.constant_schedule(sigma))
    es_params = strategy.default_params
    es_state = strategy.init(jax.random.PRNGKey(0), x0, es_params)

    def evosax_step(state, key):
      k_ask, k_tell = jax.random.split(key)
      pop, state = strategy.ask(k_ask, state, es_params)
      fitness = jax.vmap(loss_fn)(pop)
      state, _ = strategy.tell(k_tell, pop, fitness, state, es_params)
      return state

    opt = optax.sgd(lr)
    ours_state = (x0, opt.init(x0))

    def metagrad_step(state, key, chunk_size=None):
      x, opt_state = state
      g = estimators.es(loss_fn, x, key, sigma=sigma, population=population,
                        shaping="centered_rank", chunk_size=chunk_size)
      updates, opt_state = opt.update(g, opt_state)
      return optax.apply_updates(x, updates), opt_state

    chunked_step = lambda state, key: metagrad_step(state, key, chunk_size=8)

    key = jax.random.PRNGKey(1)
    t_evo = common.timeit(evosax_step, es_state, key, repeats=repeats)
    t_ours = common.timeit(metagrad_step, ours_state, key, repeats=repeats)
    m_evo = common.temp_bytes(evosax_step, es_state, key)
    m_ours = common.temp_bytes(metagrad_step, ours_state, key)
    t_chunk = common.timeit(chunked_step, ours_state, key, repeats=repeats)
    m_chunk = common.temp_bytes(chunked_step, ours_state, key)
    entry = {"evosax": {**t_evo, "temp_bytes": m_evo}, "metagrad": {**t_ours, "temp_bytes": m_ours},
             "metagrad_chunk8": {**t_chunk, "temp_bytes": m_chunk},
             "memory_ratio_evosax_over_metagrad_chunk8": m_evo / max(m_chunk, 1),
             "time_ratio_evosax_over_metagrad": t_evo["median_s"] / t_ours["median_s"],
             "memory_ratio_evosax_over_metagrad": m_evo / max(m_ours, 1)}
    data[dim] = entry
    rows.append([f"{dim:,}", population, f"{t_evo['median_s'] * 1e3:.2f}",
                 f"{t_ours['median_s'] * 1e3:.2f}", f"{entry['time_ratio_evosax_over_metagrad']:.2f}",
                 common.mib(m_evo), common.mib(m_ours),
                 f"{entry['memory_ratio_evosax_over_metagrad']:.1f}",
                 f"{t_chunk['median_s'] * 1e3:.2f}", common.mib(m_chunk),
                 f"{entry['memory_ratio_evosax_over_metagrad_chunk8']:.1f}"])
    print(f"D={dim}: evosax {t_evo['median_s'] * 1e3:.2f} ms, metagrad "
          f"{t_ours['median_s'] * 1e3:.2f} ms; temp {m_evo} vs {m_ours} bytes", flush=True)
  table = common.markdown_table(["D", "P", "evosax ms/step", "metagrad ms/step",
                                 "speed-up (evosax / metagrad)", "evosax temp MiB",
                                 "metagrad temp MiB", "memory ratio",
                                 "metagrad chunk 8 ms/step", "chunk 8 temp MiB",
                                 "memory ratio (chunk 8)"], rows)
  return {"population": population, "sigma": sigma, "results": data, "markdown": table}
