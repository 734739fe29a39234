"""8. PES and noise-reuse ES against evosax 0.3.2, on the PES paper's toy 2-D regression.

The problem of evosax's PES notebook (examples/07_persistent_es.ipynb) and of
Vicol et al. (2021), toy_regression.py: SGD on
``f(x) = sqrt(x0^2 + 5) - sqrt(5) + sin(x1)^2 exp(-5 x0^2) + 0.25 |x1 - 100|``
from x = (1, 1) for T = 100 steps with the learning-rate schedule
``exp(theta_0) (T - t)/T + exp(theta_1) t/T``; the meta-loss is the sum of
f over the unroll, truncated into windows of K = 10 steps. P = 128 particles,
sigma = 0.2, Adam 1e-3, theta = 0, particles synchronised (all reset every
10 generations), as in the notebook. Both loops are jitted whole (evosax's
reset as a ``jnp.where``). Reports the full-unroll meta-loss every 500
generations, time per generation, the step's compiled temporary memory and
the bytes each keeps between generations.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from metagrad import estimators

T, K, P, SIGMA, LR = 100, 10, 128, 0.2, 1e-3


def f(x):
  return (jnp.sqrt(x[0] ** 2 + 5) - jnp.sqrt(5.0) + jnp.sin(x[1]) ** 2 * jnp.exp(-5 * x[0] ** 2)
          + 0.25 * jnp.abs(x[1] - 100))


def window_loss(x, theta, t0, length):
  """SGD on f for ``length`` steps from step t0: (sum of f after each step, x)."""
  def step(carry, _):
    x, t, total = carry
    lr = jnp.exp(theta[0]) * (T - t) / T + jnp.exp(theta[1]) * t / T
    x = x - lr * jax.grad(f)(x)
    return (x, t + 1, total + f(x) * (t < T)), None
  (x, _, total), _ = jax.lax.scan(step, (x, t0, 0.0), None, length=length)
  return total, x


def full_loss(theta):
  return window_loss(jnp.ones(2), theta, 0, T)[0]


# metagrad: the unroll convention of estimators.pes / noise_reuse_es.
def unroll(params, inner, key, window):
  del key
  total, x = window_loss(inner["x"], params["theta"], window * K, K)
  return total, {"x": x}


def init_inner(key):
  del key
  return {"x": jnp.ones(2)}


def metagrad_runner(name: str, generations: int, accumulator: str = "store"):
  estimator = getattr(estimators, name)
  opt = optax.adam(LR)

  def generation(carry, key):
    theta, opt_state, state = carry
    g, state = estimator(unroll, theta, state, key, sigma=SIGMA, init_inner=init_inner)
    updates, opt_state = opt.update(g, opt_state)
    return (optax.apply_updates(theta, updates), opt_state, state), None

  @jax.jit
  def run(carry, key):
    return jax.lax.scan(generation, carry, jax.random.split(key, generations))[0]

  theta = {"theta": jnp.zeros(2)}
  state = estimators.init_state(estimator, init_inner, jax.random.PRNGKey(0), num_particles=P,
                                num_windows=T // K, params=theta, accumulator=accumulator)
  return run, (theta, opt.init(theta), state), generation


def evosax_runner(name: str, generations: int):
  from evosax.algorithms import NoiseReuseES, PersistentES
  cls = {"pes": PersistentES, "noise_reuse_es": NoiseReuseES}[name]
  strategy = cls(population_size=P, solution=jnp.zeros(2), optimizer=optax.adam(LR),
                 std_schedule=optax.constant_schedule(SIGMA))
  params = strategy.default_params.replace(T=T, K=K)
  x_init = jnp.ones((P, 2))

  def generation(carry, key):
    state, xs = carry
    key_ask, key_tell = jax.random.split(key)
    xs = jnp.where(state.inner_step_counter == 0, x_init, xs)   # the notebook's reset
    with jax.numpy_rank_promotion("allow"):    # evosax's own broadcasting (see vs_evosax)
      population, state = strategy.ask(key_ask, state, params)
      fitness, xs = jax.vmap(window_loss, in_axes=(0, 0, None, None))(
          xs, population, state.inner_step_counter, K)
      state, _ = strategy.tell(key_tell, population, fitness, state, params)
    return (state, xs), None

  @jax.jit
  def run(carry, key):
    return jax.lax.scan(generation, carry, jax.random.split(key, generations))[0]

  state = strategy.init(jax.random.PRNGKey(0), jnp.zeros(2), params)
  return run, (state, x_init), generation


def state_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def run(quick: bool = False) -> dict:
  try:
    import evosax  # noqa: F401
  except ImportError:
    return {"skipped": "evosax not installed (pip install -e '.[bench]')", "markdown": ""}
  total = 100 if quick else 5000
  every = 50 if quick else 500
  data, rows = {}, []
  variants = {"pes": (("evosax", evosax_runner), ("metagrad", metagrad_runner),
                      ("metagrad, regenerated xi",
                       lambda n, g: metagrad_runner(n, g, accumulator="regenerate"))),
              "noise_reuse_es": (("evosax", evosax_runner), ("metagrad", metagrad_runner))}
  for name, libraries in variants.items():
    for library, make in libraries:
      run_chunk, carry, generation = make(name, every)
      theta_of = (lambda c: c[0].mean) if library == "evosax" else (lambda c: c[0]["theta"])
      curve = [float(full_loss(theta_of(carry)))]
      # Compile for the initial carry and for the carry a chunk returns (evosax's
      # initial state holds weak-typed scalars, so the two differ).
      warm = jax.block_until_ready(run_chunk(carry, jax.random.PRNGKey(99)))
      jax.block_until_ready(run_chunk(warm, jax.random.PRNGKey(98)))
      times = []
      for i in range(total // every):
        start = time.perf_counter()
        carry = jax.block_until_ready(run_chunk(carry, jax.random.PRNGKey(i)))
        times.append((time.perf_counter() - start) / every)
        curve.append(float(full_loss(theta_of(carry))))
      temp = common.temp_bytes(lambda c, k: generation(c, k)[0], carry, jax.random.PRNGKey(0))
      kept = state_bytes(carry)
      entry = {"curve": curve, "every": every, "final_loss": curve[-1],
               "median_s_per_generation": float(sorted(times)[len(times) // 2]),
               "temp_bytes": temp, "state_bytes": kept}
      data[f"{library}/{name}"] = entry
      rows.append([name, library, f"{curve[0]:.1f}", f"{curve[-1]:.1f}",
                   f"{entry['median_s_per_generation'] * 1e3:.3f}", f"{temp / 1024:.1f}",
                   f"{kept / 1024:.1f}"])
      print(f"{library} {name}: loss {curve[0]:.1f} -> {curve[-1]:.1f}, "
            f"{entry['median_s_per_generation'] * 1e3:.3f} ms/generation", flush=True)
    ours, theirs = data[f"metagrad/{name}"], data[f"evosax/{name}"]
    data[f"{name}_time_ratio_evosax_over_metagrad"] = (
        theirs["median_s_per_generation"] / ours["median_s_per_generation"])
  table = common.markdown_table(
      ["estimator", "library", "meta-loss at start", f"after {total} generations",
       "ms / generation (median)", "step temp KiB", "state kept KiB"], rows)
  return {"generations": total, "results": data, "markdown": table}
