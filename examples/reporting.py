"""What every example's report shares: loading ``results.json`` files,
statistics over seeds, table rendering, provenance lines and the papers'
numbers (``examples/paper_numbers.json``).

Each example owns its tables: ``examples.<name>.report(records, plots=None)``
returns ``{block name: markdown}`` from the loaded records (all of them; it
selects its own with :func:`under`). ``python -m examples.report`` collects
them and rewrites the blocks of the README and the documentation pages.
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import re
import statistics
from typing import Iterable


# results.json layout version (examples/common.py write_results). 2: every run
# records the flags it ran with, including those added since (num_blocks,
# damping, imaml_solver, lanczos_iterations), so no report backfills defaults.
SCHEMA = 2

# Two-sided 97.5% Student-t quantiles by degrees of freedom (n - 1 seeds).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
  if df in _T975:
    return _T975[df]
  return 1.96 if df > 30 else _T975[max(k for k in _T975 if k <= df)]


class Stat:
  """Mean, sample std and Student-t 95% CI half-width of values over seeds."""

  def __init__(self, values: Iterable[float]):
    self.values = [float(v) for v in values]
    self.n = len(self.values)
    finite = [v for v in self.values if math.isfinite(v)]
    self.mean = statistics.fmean(finite) if finite else float("nan")
    self.std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    self.ci95 = t975(len(finite) - 1) * self.std / math.sqrt(len(finite)) if len(finite) > 1 else 0.0

  def pm(self, scale: float = 1.0, digits: int = 2, ci: bool = False) -> str:
    if not self.n:
      return "-"
    # A diverged run in fixed point would print 17 digits.
    fmt = ".3g" if abs(scale * self.mean) >= 1e5 else f".{digits}f"
    if self.n == 1:  # no spread to show from one run
      return f"{scale * self.mean:{fmt}} (1 run)"
    spread = self.ci95 if ci else self.std
    return f"{scale * self.mean:{fmt}} ± {scale * spread:{fmt}}"


def load(root: pathlib.Path) -> list[dict]:
  """Every ``results.json`` under ``root``, with ``_path`` relative to it."""
  out = []
  for path in sorted(root.rglob("results.json")):
    record = json.loads(path.read_text())
    if record.get("schema", 1) != SCHEMA:
      raise ValueError(f"{path}: results.json schema {record.get('schema', 1)}, this report "
                       f"reads {SCHEMA} (python -m examples.migrate_results {root})")
    record["_path"] = str(path.parent.relative_to(root))
    out.append(record)
  return out


def under(records: list[dict], prefix: str) -> list[dict]:
  return [r for r in records if r["_path"] == prefix or r["_path"].startswith(prefix + "/")]


def table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def wall(records: list[dict]) -> str:
  times = [r.get("wall_time_s", 0.0) for r in records]
  return f"{statistics.fmean(times) / 60:.1f} min" if times else "-"


def conv_net(flags: dict) -> str:
  """``conv<k>``: the conv4 network with its ``--num_blocks`` blocks."""
  return f"conv{flags['num_blocks']}"


def device(records: list[dict]) -> str:
  kinds = sorted({f"{r['device']['kind']} x{r['device']['count']}" for r in records
                  if "device" in r})
  return ", ".join(kinds) or "-"


def commands(records: list[dict]) -> str:
  """The commands that produced ``records``, with the seed generalised."""
  cmds = sorted({re.sub(r"(--seed |/seed)\d+", r"\1S", r.get("command", ""))
                 .replace(" --resume", "").replace(" --overwrite", "") for r in records})
  return "\n".join(f"    {c}" for c in cmds if c)


def late_change(curve, fraction: float = 0.3) -> float | None:
  """How much a logged curve ``[[step, value], ...]`` still moved over its last
  ``fraction`` of steps: last value minus the value logged at (1 - fraction)
  of the way (window means); None without a curve."""
  if not curve or len(curve) < 2:
    return None
  start = curve[-1][0] * (1 - fraction)
  before = [v for s, v in curve if s <= start] or [curve[0][1]]
  return curve[-1][1] - before[-1]


@functools.lru_cache(maxsize=1)
def _paper_numbers() -> dict:
  return json.loads((pathlib.Path(__file__).parent / "paper_numbers.json").read_text())


def paper(experiment: str, row: str) -> str:
  """A paper's number for ``row`` of ``experiment`` (``examples/paper_numbers.json``,
  where each experiment names its table or figure)."""
  return _paper_numbers()[experiment]["rows"][row]
