"""The benchmark code paths at tiny sizes (no timing is asserted; the
properties checked are deterministic: compiled memory, shared starting points)."""

import json

import pytest

from benchmarks import common, run_all

BY_NUMBER = {int(title.split(".")[0]): module for title, module in run_all.BENCHMARKS.items()}


def _check_1(r):
  memory = r["by_T"]
  # Reverse mode's tape grows with T; ES, iMAML and (more slowly) the
  # checkpointed tape do not.
  assert memory[10]["backprop"] > 2 * memory[1]["backprop"]
  assert memory[10]["es_wsr"] <= 1.1 * memory[1]["es_wsr"]
  assert memory[10]["imaml"] <= 1.1 * memory[1]["imaml"]
  assert memory[10]["backprop_checkpointed"] < memory[10]["backprop"] / 2
  # Mixed mode keeps one parameter vector per step: flatter than checkpoints.
  assert memory[10]["mixed"] < memory[10]["backprop_checkpointed"]
  assert memory[10]["mixed_checkpointed"] < memory[10]["backprop"] / 2
  # Inner Adam's two moment buffers ride along the tape; mixed mode with
  # checkpoints keeps it flat.
  assert memory[10]["adam"] > memory[10]["backprop"]
  assert memory[10]["adam_mixed_checkpointed"] < memory[10]["adam"] / 2
  assert all(memory[t][f"{n}_time_s"] > 0 for t in (1, 10) for n in
             ("backprop", "backprop_checkpointed", "mixed", "mixed_checkpointed"))


def _check_2(r):
  assert all(v["overhead"] > 0 for k, v in r["results"].items() if k.startswith("chunk"))


def _check_3(r):
  for sampling in ("antithetic", "plain"):
    small, large = r["results"][sampling][1000], r["results"][sampling][300000]
    # At D = 1000 "auto" is all-at-once: the same program as chunk_size=None.
    assert small["metagrad"]["temp_bytes"] == small["metagrad_chunk_none"]["temp_bytes"]
    # At D = 3e5 "auto" draws the directions (1.2 MB) one at a time (an
    # elementwise loss) and holds less than evosax's population matrix or its
    # own all-at-once run.
    assert large["memory_ratio_evosax_over_metagrad"] > 1.4, sampling
    assert large["metagrad"]["temp_bytes"] < 0.75 * large["metagrad_chunk_none"]["temp_bytes"]


def _check_4(r):
  # EvoGrad's Fig. 5/7 regime: less compiled memory than T1-T2 on Meta-Weight-Net.
  assert r["results"]["meta_weight_net"][1]["memory_ratio_t1t2_over_evograd_gaussian"] > 1.2


def _check_5(r):
  # Pushing all D tangents at once holds more than chunks of 16.
  chunks = r["results"]["chunks"]
  assert chunks["None"]["temp_bytes"] > chunks["16"]["temp_bytes"]


def _check_6(r):
  assert "K2_M1" in r["results"] and r["results"]["K2_M1"]["time_x_variance_vs_K2"] == 1.0
  assert all(v["std"] > 0 for k, v in r["results"].items() if k.startswith("K"))


def _check_7(r):
  unrolled = r["results"]
  # A meta-update's memory does not grow with the horizon for PES; backprop
  # through the whole unroll does.
  assert unrolled[500]["pes"]["temp_bytes"] == unrolled[50]["pes"]["temp_bytes"]
  assert (unrolled[500]["backprop (full unroll)"]["temp_bytes"]
          > 5 * unrolled[50]["backprop (full unroll)"]["temp_bytes"])


def _check_8(r):
  pes = r["results"]
  # Both libraries ran the same problem from the same start.
  assert pes["evosax/pes"]["curve"][0] == pes["metagrad/pes"]["curve"][0]


def _check_9(r):
  for entry in r["results"].values():
    assert entry["auto_chunk"] in (None, 1, 2, 4, 8, 16, 32, 64)
    assert entry["unit_bytes"] is not None and entry["unit_bytes"] > 0
    assert entry["unit_flops"] is not None and entry["unit_flops"] > 0


CHECKS = {1: _check_1, 2: _check_2, 3: _check_3, 4: _check_4, 5: _check_5,
          6: _check_6, 7: _check_7, 8: _check_8, 9: _check_9}


@pytest.mark.parametrize("number", sorted(BY_NUMBER))
def test_benchmark_quick(number, omniglot):
  result = BY_NUMBER[number].run(quick=True)
  assert "|---|" in result["markdown"]
  CHECKS[number](result)


def test_run_all_writes_results(tmp_path):
  run_all.main(["--quick", "--only", "5", "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  assert "hardware" in results and any(k.startswith("5.") for k in results)
  assert "| D |" in (tmp_path / "results.md").read_text()


def test_markdown_table():
  assert common.markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
