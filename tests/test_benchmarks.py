"""The benchmark code paths, at tiny sizes (no timing is asserted)."""

import json

from benchmarks import common, run_all


def test_run_all_quick(tmp_path):
  run_all.main(["--quick", "--out", str(tmp_path), "--only", "1", "2", "4", "5"])
  results = json.loads((tmp_path / "results.json").read_text())
  memory = results["1. Meta-gradient memory vs task length"]["by_T"]
  # Reverse mode's tape grows with T; ES does not.
  assert memory["10"]["backprop"] > 2 * memory["1"]["backprop"]
  assert memory["10"]["es_wsr"] <= 1.1 * memory["1"]["es_wsr"]
  overhead = results["2. ES overhead against its limit"]["results"]
  assert all(v["overhead"] > 0 for k, v in overhead.items() if k.startswith("chunk"))
  md = (tmp_path / "results.md").read_text()
  assert "| T |" in md and "EvoGrad" in md


def test_markdown_table():
  assert common.markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
