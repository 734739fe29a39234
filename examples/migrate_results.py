"""Brings committed ``results.json`` files to the current layout (schema 2).

    python -m examples.migrate_results examples/results

Schema 1 files left out the flags that did not exist when they were written;
their reports filled in the old defaults. Migrating writes those values into
the files once (the values the runs actually used), so reports read every
flag as recorded:

* ``num_blocks`` 4 for conv4 runs from before ``--num_blocks``;
* ``damping`` 0 for iMAML Omniglot runs from before ``--damping`` (the default
  is now 2.5), ``mixed_mode`` false for MAML runs from before it;
* ``imaml_solver`` "sgd" and ``imaml_damping`` 0 for sine runs from before
  those flags (the solver default is now L-BFGS);
* ``lanczos_iterations`` 80 in results measured with Lanczos before the count
  was stored (``hessian_extreme_eigenvalues``' default then).

Where an added flag's current default differs from what the run used, the
flag is appended to ``command`` so that it still reproduces the run; the
command as it was typed is kept in ``command_as_run``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from examples.reporting import SCHEMA


def _add_flag(record: dict, name: str, value, *, in_command: bool) -> None:
  if name in record["flags"]:
    return
  record["flags"][name] = value
  if in_command and f"--{name}" not in record.get("command", ""):
    record.setdefault("command_as_run", record.get("command", ""))
    shown = f"{value:g}" if isinstance(value, float) else value
    record["command"] = f"{record.get('command', '')} --{name} {shown}"


def migrate(record: dict) -> dict:
  """``record`` (a loaded schema-1 ``results.json``) at schema 2."""
  if record.get("schema", 1) >= SCHEMA:
    return record
  flags = record["flags"]
  module = record.get("command", "").split(" ")[2:3]
  module = module[0] if module else ""
  if "channels" in flags:
    _add_flag(record, "num_blocks", 4, in_command=False)       # default then and now
  if module == "examples.imaml_omniglot":
    _add_flag(record, "damping", 0.0, in_command="imaml" in record["results"])
    _add_flag(record, "mixed_mode", False, in_command=False)
    for result in record["results"].values():
      if "support_hessian" in result:
        result.setdefault("lanczos_iterations", 80)
  if module == "examples.sine_meta_learning":
    _add_flag(record, "imaml_solver", "sgd", in_command="imaml" in record["results"]
              and flags.get("method") == "imaml")
    _add_flag(record, "imaml_damping", 0.0, in_command=False)
  record["schema"] = SCHEMA
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("root", type=pathlib.Path)
  args = parser.parse_args(argv)
  changed = 0
  for path in sorted(args.root.rglob("results.json")):
    record = json.loads(path.read_text())
    if record.get("schema", 1) < SCHEMA:
      path.write_text(json.dumps(migrate(record), indent=2, default=float))
      changed += 1
  print(f"migrated {changed} file(s) under {args.root} to schema {SCHEMA}")


if __name__ == "__main__":
  main()
