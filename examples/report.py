"""Collects the examples' tables into the README and the documentation pages.

    python -m examples.report examples/results                 # print every table
    python -m examples.report examples/results --readme README.md --docs docs   # make report

Every experiment writes ``results.json`` (flags, seed, git commit, device, wall
time, final metrics; see ``examples/common.py``), and every example owns the
tables of its runs: ``examples.<name>.report(records, plots=None)`` returns
``{block name: markdown}`` (loading, statistics over seeds and table rendering
are shared, in ``examples/reporting.py``; the papers' numbers are in
``examples/paper_numbers.json``). This script loads the records, asks each
example for its blocks, adds the benchmark tables (``benchmarks/results``), and
replaces each ``<!-- report:NAME -->`` ... ``<!-- /report:NAME -->`` block of
the README and of every page under ``--docs`` with the table of that name: the
reproduction and performance numbers of the site come only from here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pathlib
import re
import statistics
from typing import Iterable

from examples.reporting import load

# The examples that own report blocks, and the blocks each one returns.
EXAMPLES = {
    "meta_optimizers": ("kronecker_t1", "kronecker_t1_sweep", "kronecker_t2"),
    "evograd_rotation": ("rotation",),
    "evograd_toy": ("evograd_toy",),
    "es_protonet": ("es_protonet", "es_protonet_curve"),
    "sine_meta_learning": ("sine",),
    "unrolled_optimization": ("unrolled",),
    "imaml_omniglot": ("imaml",),
    "estimator_showdown": ("scales",),
    "optax_inner_loop": ("optax_inner_loop",),
    "meta_learning_rates": ("learning_rates",),
}
BLOCKS = tuple(b for blocks in EXAMPLES.values() for b in blocks) + ("benchmarks",)


def benchmarks(records: list[dict], results: pathlib.Path | None = None) -> str:
  path = results or pathlib.Path("benchmarks/results/results.json")
  if not path.exists():
    return "*(run `make bench`)*"
  data = json.loads(path.read_text())
  parts = [data.get("hardware", "")]
  entries = [(t, r) for t, r in data.items() if isinstance(r, dict) and "markdown" in r]
  for title, r in sorted(entries, key=lambda e: int(e[0].split(".")[0])):
    parts.append(f"**{title}** ({r.get('wall_s', 0) / 60:.1f} min)\n\n{r['markdown']}")
  return "\n\n".join(parts)


def render(records: list[dict], names: Iterable[str] | None = None,
           plots: pathlib.Path | None = None) -> dict[str, str]:
  """``{block: markdown}`` for ``names`` (default: every block)."""
  wanted = list(names or BLOCKS)
  out = {}
  for example, blocks in EXAMPLES.items():
    if not set(blocks) & set(wanted):
      continue
    try:
      tables = importlib.import_module(f"examples.{example}").report(records, plots)
    except (KeyError, ValueError, IndexError, TypeError, statistics.StatisticsError) as err:
      tables = {b: f"*(report {b}: incomplete results: {err!r})*" for b in blocks}
    out.update({b: tables[b] for b in blocks if b in wanted})
  if "benchmarks" in wanted:
    out["benchmarks"] = benchmarks(records)
  return {name: out[name] for name in wanted}


def rewrite_readme(readme: pathlib.Path, blocks: dict[str, str]) -> list[str]:
  """Replaces ``<!-- report:NAME -->...<!-- /report:NAME -->``; returns the names done."""
  text = readme.read_text()
  done = []
  for name, body in blocks.items():
    pattern = re.compile(rf"(<!-- report:{name} -->\n).*?(<!-- /report:{name} -->)", re.S)
    if pattern.search(text):
      text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
      done.append(name)
  readme.write_text(text)
  return done


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("runs", type=pathlib.Path, help="directory holding results.json files")
  parser.add_argument("--only", nargs="+", choices=BLOCKS, default=None)
  parser.add_argument("--readme", type=pathlib.Path, default=None,
                      help="rewrite this file's <!-- report:NAME --> blocks")
  parser.add_argument("--docs", type=pathlib.Path, default=None,
                      help="also rewrite the blocks of every page under this directory")
  args = parser.parse_args(argv)
  if not args.runs.is_dir():
    raise SystemExit(f"error: {args.runs} is not a directory")
  records = load(args.runs)
  blocks = render(records, args.only, plots=args.runs)
  pages = ([args.readme] if args.readme else []) + (
      sorted(args.docs.rglob("*.md")) if args.docs else [])
  for page in pages:
    page_blocks = blocks
    if args.docs and args.readme != page:
      # Plots are linked from the runs directory; docs pages reach it through
      # the docs/results symlink.
      up = os.path.relpath(args.docs / "results", page.parent)
      page_blocks = {n: b.replace(f"]({args.runs}/", f"]({up}/") for n, b in blocks.items()}
    done = rewrite_readme(page, page_blocks)
    if done:
      print(f"rewrote {len(done)} block(s) of {page}: {', '.join(done)}")
  if not pages:
    for name, body in blocks.items():
      print(f"## {name}\n\n{body}\n")


if __name__ == "__main__":
  main()
