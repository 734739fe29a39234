"""Every example runs end to end in --smoke mode; checkpoints resume exactly."""

import json
import pathlib

import numpy as np
import pytest

from examples import (es_protonet, estimator_showdown, evograd_rotation, evograd_toy,
                      meta_optimizers, sine_meta_learning)

SMOKE = {
    "estimator_showdown": (estimator_showdown, ["showdown.png", "results.json"]),
    "es_protonet": (es_protonet, ["results.json", "metrics.jsonl", "learning_curve.png",
                                  "checkpoint.npz"]),
    "evograd_toy": (evograd_toy, ["fig2_hypergradient.png", "fig3_trajectories.png",
                                  "results.json"]),
    "evograd_rotation": (evograd_rotation, ["results.json", "baseline/metrics.jsonl",
                                            "evograd/learning_curve.png"]),
    "sine_meta_learning": (sine_meta_learning, ["results.json", "maml/checkpoint.npz",
                                                "turtle/learning_curve.png"]),
    "meta_optimizers": (meta_optimizers, ["results.json", "LR_w_KLin/metrics.jsonl"]),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_smoke(name, tmp_path, omniglot):
  module, files = SMOKE[name]
  module.main(["--smoke", "--out", str(tmp_path)])
  for f in files:
    assert (tmp_path / f).exists(), f
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["flags"]["smoke"] is True
  numbers = [v for v in _numbers(results) if v is not None]
  assert numbers and all(np.isfinite(numbers))


def _numbers(tree):
  if isinstance(tree, dict):
    for k, v in tree.items():
      if k != "flags":
        yield from _numbers(v)
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield float(tree)


def _final_params(out):
  with np.load(pathlib.Path(out) / "checkpoint.npz") as data:
    return int(data["step"]), [data[k] for k in sorted(data.files) if k.startswith("leaf")]


@pytest.mark.parametrize("module,sub,extra", [
    (es_protonet, "", ["--estimator", "es_wsr", "--image_size", "28", "--test_episodes", "4",
                       "--val_episodes", "4"]),
    (sine_meta_learning, "meta_sgd", ["--method", "meta_sgd"]),
])
def test_kill_and_resume_gives_same_final_parameters(module, sub, extra, tmp_path, omniglot):
  common = ["--smoke", "--checkpoint_every", "2", "--log_every", "2"] + extra
  module.main(common + ["--steps", "6", "--out", str(tmp_path / "straight")])
  # "Killed" after 4 steps (last checkpoint at 4), then resumed to 6.
  module.main(common + ["--steps", "4", "--out", str(tmp_path / "resumed")])
  module.main(common + ["--steps", "6", "--resume", "--out", str(tmp_path / "resumed")])
  step_a, a = _final_params(tmp_path / "straight" / sub)
  step_b, b = _final_params(tmp_path / "resumed" / sub)
  assert step_a == step_b == 6
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  # And the resumed run really continued rather than restarting: its log has both parts.
  log = (tmp_path / "resumed" / sub / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in log] == [2, 4, 6]


@pytest.mark.parametrize("module,argv", [
    (es_protonet, ["--population", "0"]),
    (es_protonet, ["--way", "5000"]),
    (sine_meta_learning, ["--inner_lr", "-1"]),
    (meta_optimizers, ["--only", "LR w/ Adam"]),
    (evograd_toy, ["--copies", "1"]),
])
def test_impossible_flags_exit_with_message(module, argv, tmp_path, omniglot, capsys):
  with pytest.raises(SystemExit) as err:
    module.main(argv + ["--smoke", "--out", str(tmp_path)])
  assert "error" in str(err.value)
