"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import numpy as np


def compiled(fn: Callable, *args):
  return jax.jit(fn).lower(*args).compile()


def temp_bytes(fn: Callable, *args, exe=None) -> int:
  """XLA's compiled peak temporary memory (deterministic; no execution)."""
  exe = compiled(fn, *args) if exe is None else exe
  return int(exe.memory_analysis().temp_size_in_bytes)


def timeit(fn: Callable, *args, repeats: int = 5, exe=None, min_total_s: float = 0.0,
           max_repeats: int = 200) -> dict:
  """Median / min / max wall time of a compiled call, after one warm-up call:
  ``repeats`` calls, or more (up to ``max_repeats``) until they took
  ``min_total_s`` in all, so that millisecond calls get a stable median."""
  exe = compiled(fn, *args) if exe is None else exe
  jax.block_until_ready(exe(*args))
  times = []
  while len(times) < repeats or (sum(times) < min_total_s and len(times) < max_repeats):
    start = time.perf_counter()
    jax.block_until_ready(exe(*args))
    times.append(time.perf_counter() - start)
  gc.collect()
  return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
          "max_s": float(np.max(times))}


def measure(fn: Callable, *args, repeats: int = 5, min_total_s: float = 0.0) -> dict:
  """:func:`timeit` plus ``temp_bytes``, from a single compilation."""
  exe = compiled(fn, *args)
  return {**timeit(fn, *args, repeats=repeats, exe=exe, min_total_s=min_total_s),
          "temp_bytes": temp_bytes(fn, *args, exe=exe)}


def peak_rss_of(code: str) -> int:
  """Peak resident memory (bytes) of a fresh Python process running ``code``."""
  probe = code + "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
  return int(out.stdout.strip().splitlines()[-1]) * 1024


def mib(x: float) -> str:
  return f"{x / 2**20:.2f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)
