"""Runs every benchmark; writes results.json and results.md under --out.

    python -m benchmarks.run_all --out benchmarks/results   (full sizes)
    python -m benchmarks.run_all --quick --out /tmp/bench   (tiny sizes, used by the tests)
    python -m benchmarks.run_all --only 3 9 --out benchmarks/results
        (re-runs benchmarks 3 and 9; the other entries of an existing results.json are kept)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax

from benchmarks import (chunk_grid, es_overhead, evograd_variance, evograd_vs_t1t2, forward_vs_backprop,
                        memory_vs_task_length, pes_vs_evosax, unrolled_vs_full, vs_evosax)

BENCHMARKS = {
    "1. Meta-gradient memory vs task length": memory_vs_task_length,
    "2. ES overhead against its limit": es_overhead,
    "3. metagrad vs evosax": vs_evosax,
    "4. EvoGrad vs T1-T2 as the model grows": evograd_vs_t1t2,
    "5. forward_mode vs backprop": forward_vs_backprop,
    "6. EvoGrad noise vs cost (copies or keys)": evograd_variance,
    "7. Unrolled estimators vs full unroll": unrolled_vs_full,
    "8. PES / NRES vs evosax": pes_vs_evosax,
    "9. chunk_size='auto' vs a grid": chunk_grid,
}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--only", type=int, nargs="*", help="benchmark numbers to run (1-9)")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  header = (f"Hardware: {platform.processor() or platform.machine()}, "
            f"{device.platform} ({device.device_kind}), {jax.device_count()} device(s); "
            f"jax {jax.__version__}; quick={args.quick}")
  results = {}
  if args.only and (out / "results.json").exists():
    results = json.loads((out / "results.json").read_text())
  results["hardware"] = header
  for i, (title, module) in enumerate(BENCHMARKS.items(), 1):
    if args.only and i not in args.only:
      continue
    print(f"== {title}", flush=True)
    start = time.perf_counter()
    r = module.run(quick=args.quick)
    r["wall_s"] = time.perf_counter() - start
    r["quick"] = args.quick
    results[title] = r
  md = [f"# metagrad benchmarks\n\n{header}\n"]
  for title, module in BENCHMARKS.items():
    if title in results:
      r = results[title]
      md.append(f"## {title}\n\n{(module.__doc__ or '').strip()}\n\n{r.get('skipped', '')}"
                f"{r['markdown']}\n")
  (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
  (out / "results.md").write_text("\n".join(md))
  print("\n".join(md))


if __name__ == "__main__":
  main()
