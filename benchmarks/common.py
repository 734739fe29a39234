"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import re
import resource
import subprocess
import sys
import textwrap
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


def _timed_rounds(exes: dict, args, repeats: int, min_total_s: float,
                  max_repeats: int) -> dict[str, list[float]]:
  """Wall times of compiled calls, after one warm-up call each, taken in
  rounds of one call per program (the order rotated every round): at least
  ``repeats`` each, more (up to ``max_repeats``) until each took
  ``min_total_s`` in all."""
  for exe in exes.values():
    jax.block_until_ready(exe(*args))
  times = {name: [] for name in exes}
  order = list(exes)
  while True:
    done = all(len(t) >= repeats for t in times.values())
    if done and (all(sum(t) >= min_total_s for t in times.values())
                 or all(len(t) >= max_repeats for t in times.values())):
      break
    for name in order:
      start = time.perf_counter()
      jax.block_until_ready(exes[name](*args))
      times[name].append(time.perf_counter() - start)
    order = order[1:] + order[:1]
  gc.collect()
  return times


def _stats(times: list[float]) -> dict:
  return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
          "max_s": float(np.max(times))}


def timeit(fn: Callable, *args, repeats: int = 5, exe=None, min_total_s: float = 0.0,
           max_repeats: int = 200) -> dict:
  """Median / min / max wall time of a compiled call, after one warm-up call:
  ``repeats`` calls, or more (up to ``max_repeats``) until they took
  ``min_total_s`` in all, so that millisecond calls get a stable median."""
  exe = compiled(fn, *args) if exe is None else exe
  return _stats(_timed_rounds({"fn": exe}, args, repeats, min_total_s, max_repeats)["fn"])


def measure(fn: Callable, *args, repeats: int = 5, min_total_s: float = 0.0) -> dict:
  """:func:`timeit` plus ``temp_bytes``, from a single compilation."""
  exe = compiled(fn, *args)
  return {**timeit(fn, *args, repeats=repeats, exe=exe, min_total_s=min_total_s),
          "temp_bytes": temp_bytes(fn, *args, exe=exe)}


def measure_interleaved(fns: dict[str, Callable], *args, repeats: int = 5,
                        min_total_s: float = 0.0, max_repeats: int = 200) -> dict:
  """:func:`measure` for several programs, their calls taken in turns (one
  call of each per round, the order rotated every round) so that a slow spell
  of a shared machine, or the page faults that follow a program with large
  temporaries, land on all of them alike and their ratios stay meaningful."""
  exes = {name: compiled(fn, *args) for name, fn in fns.items()}
  times = _timed_rounds(exes, args, repeats, min_total_s, max_repeats)
  return {name: {**_stats(times[name]), "temp_bytes": temp_bytes(fns[name], *args,
                                                                 exe=exes[name])}
          for name in fns}


def same_program(f: Callable, g: Callable, *args) -> bool:
  """Whether ``jit(f)`` and ``jit(g)`` lower to the same program (source
  locations aside): then timing both measures only the machine's noise."""
  text = lambda fn: re.sub(r"loc\(.*?\)|#loc\d*", "", jax.jit(fn).lower(*args).as_text())
  return text(f) == text(g)


def peak_rss_of(code: str) -> int:
  """Peak resident memory (bytes) of a fresh Python process running ``code``.

  Linux's ``VmHWM`` (the new program's own high-water mark): ``ru_maxrss``
  survives ``fork`` + ``exec`` and would report the parent's size whenever the
  benchmark process itself is the larger one."""
  probe = code + textwrap.dedent("""
      import resource
      try:
          with open("/proc/self/status") as f:
              kib = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
      except (OSError, StopIteration):
          kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      print(kib)""")
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
  return int(out.stdout.strip().splitlines()[-1]) * 1024


def mib(x: float) -> str:
  return f"{x / 2**20:.2f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)
