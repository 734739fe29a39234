"""The benchmark code paths, at tiny sizes (no timing is asserted)."""

import json

from benchmarks import common, run_all


def test_run_all_quick(tmp_path):
  run_all.main(["--quick", "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  memory = results["1. Meta-gradient memory vs task length"]["by_T"]
  # Reverse mode's tape grows with T; ES does not.
  assert memory["10"]["backprop"] > 2 * memory["1"]["backprop"]
  assert memory["10"]["es_wsr"] <= 1.1 * memory["1"]["es_wsr"]
  overhead = results["2. ES overhead against its limit"]["results"]
  assert all(v["overhead"] > 0 for k, v in overhead.items() if k.startswith("chunk"))
  # evograd.txt Fig. 5/7: on Meta-Weight-Net EvoGrad needs less memory than
  # T1-T2 (XLA's compiled temporaries are deterministic).
  evograd = results["4. EvoGrad vs T1-T2 as the model grows"]["results"]
  assert evograd["meta_weight_net"]["1"]["memory_ratio_t1t2_over_evograd_gaussian"] > 1.2
  # evosax is installed with the test environment (the `bench` extra), so the
  # comparison really runs; both steps took the same inputs.
  evosax = results["3. metagrad vs evosax"]["results"]
  assert set(evosax) == {"1000", "10000"}
  assert all(v["time_ratio_evosax_over_metagrad"] > 0 for v in evosax.values())
  md = (tmp_path / "results.md").read_text()
  assert "| T |" in md and "EvoGrad" in md


def test_markdown_table():
  assert common.markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
