"""7. Unrolled estimators vs full-unroll ES and backprop as the horizon grows.

The learned learning-rate schedule of ``examples/unrolled_optimization.py``
(SGD on a 1-32-32-1 MLP, sine regression, T inner steps, windows of K = 10).
Per meta-update: PES / truncated backprop take one window per particle
(P = 32), the full-unroll estimators run all T steps (``es`` with P = 32,
``backprop`` through the whole unroll). Median time and XLA's compiled peak
temporary memory for T = 100, 1,000 and 10,000.
"""

from __future__ import annotations

import functools

import jax

from benchmarks import common
from examples.unrolled_optimization import lr_schedule_problem
from metagrad import estimators

K = 10


def run(quick: bool = False) -> dict:
  horizons = (50, 500) if quick else (100, 1000, 10_000)
  particles = 8 if quick else 32
  rows, data, names = [], {}, None
  for horizon in horizons:
    unroll, init_inner, theta, _, _ = lr_schedule_problem(K, horizon)
    key = jax.random.PRNGKey(0)
    full = estimators.full_unroll(unroll, init_inner, key, num_windows=horizon // K)
    fns = {
        "backprop (full unroll)": (lambda p, k: estimators.backprop(full, p, k), (theta,)),
        "es (full unroll)": (lambda p, k: estimators.es(full, p, k, sigma=0.1,
                                                        population=particles), (theta,)),
    }
    for name in ("truncated_backprop", "pes"):
      est = getattr(estimators, name)
      state = estimators.init_state(est, init_inner, key, num_particles=particles,
                                    num_windows=horizon // K, params=theta)
      kw = {} if name == "truncated_backprop" else {"sigma": 0.1}
      fns[name] = (functools.partial(
          lambda p, k, s, est, kw: est(unroll, p, s, k, init_inner=init_inner, **kw),
          est=est, kw=kw), (theta,), state)
    entry = {}
    if quick and horizon != horizons[0]:
      # The tests compare memory across horizons for these two only.
      fns = {name: fns[name] for name in ("backprop (full unroll)", "pes")}
    for name, spec in fns.items():
      fn, args = spec[0], spec[1]
      extra = spec[2:] if len(spec) > 2 else ()
      call = (lambda p, k, f=fn, e=extra: f(p, k, *e))
      repeats = 1 if horizon >= 10_000 and "full" in name else (2 if quick else 5)
      entry[name] = common.measure(call, *args, key, repeats=repeats)
    data[horizon] = entry
    names = names or list(fns)          # the first horizon's columns
    rows.append([f"{horizon:,}"] + [f"{entry[n]['median_s'] * 1e3:.1f} / "
                                    f"{common.mib(entry[n]['temp_bytes'])}" if n in entry
                                    else "-" for n in names])
    print(f"T={horizon}: " + ", ".join(f"{n} {e['median_s'] * 1e3:.1f} ms "
                                       f"{e['temp_bytes'] / 2**20:.2f} MiB"
                                       for n, e in entry.items()), flush=True)
  table = common.markdown_table(["T"] + [f"{n}: ms / MiB" for n in names], rows)
  return {"particles": particles, "window": K, "results": data, "markdown": table}
