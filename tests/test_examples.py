"""Every example runs end to end in --smoke mode and behaves like a tool:
exact and checked resume, reproducible results, defaults in --help."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from examples import (es_protonet, estimator_showdown, evograd_rotation, evograd_toy,
                      imaml_omniglot, meta_learning_rates, meta_optimizers, migrate_results,
                      optax_inner_loop, report, reporting, sine_meta_learning,
                      unrolled_optimization)

SMOKE = {
    "estimator_showdown": (estimator_showdown, [], ["showdown.png", "results.json"]),
    "es_protonet": (es_protonet, ["--image_size", "28"],
                    ["results.json", "metrics.jsonl", "learning_curve.png", "checkpoint.npz"]),
    "evograd_toy": (evograd_toy, [], ["fig2_hypergradient.png", "fig3_trajectories.png",
                                      "results.json"]),
    "evograd_rotation": (evograd_rotation, [], ["results.json", "baseline/metrics.jsonl",
                                                "evograd/learning_curve.png",
                                                "t1_t2/checkpoint.npz"]),
    # sine_meta_learning's smoke run (all six methods) is the first run of
    # test_resume_of_a_multi_run_example_starts_the_runs_that_had_not_started.
    "meta_optimizers": (meta_optimizers, [], ["results.json", "LR_w_KLin/metrics.jsonl"]),
    "meta_learning_rates": (meta_learning_rates, [],
                            ["results.json", "es_wsr_P4_sgd_1/learning_curve.png",
                             "es_wsr_P4_sgd_1/checkpoint.npz"]),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_smoke(name, tmp_path, omniglot):
  module, extra, files = SMOKE[name]
  module.main(["--smoke", "--out", str(tmp_path), *extra])
  _assert_a_complete_smoke_run(tmp_path, name, files)


@pytest.mark.parametrize("task,methods", [
    ("influence", list(unrolled_optimization.METHODS)),
    # The windowed inner problem (init_inner, staggered particles) through one
    # method: each lr_schedule method compiles for ~15 s.
    ("lr_schedule", ["pes"]),
])
def test_unrolled_optimization_smoke(task, methods, tmp_path):
  unrolled_optimization.main(["--smoke", "--task", task, "--methods", *methods,
                              "--out", str(tmp_path)])
  _assert_a_complete_smoke_run(
      tmp_path, "unrolled_optimization",
      ["meta_loss.png"] + [f"{m}/{f}" for m in methods for f in ("checkpoint.npz", "metrics.jsonl")])
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["task"] == task and set(results["results"]) == set(methods)
  for m in methods:
    row = results["results"][m]
    assert row["diverged_at"] is None, (m, row)
    assert len(row["final_theta"]) == (1 if task == "influence" else 2), (m, row)
    assert _steps_logged(tmp_path / m / "metrics.jsonl") == [2, 4]


def _assert_a_complete_smoke_run(out, name, files):
  for f in files:
    assert (out / f).exists(), f
  results = json.loads((out / "results.json").read_text())
  assert results["flags"]["smoke"] is True
  assert results["git_commit"] and results["device"]["count"] >= 1 and results["wall_time_s"] > 0
  assert results["command"].startswith(f"python -m examples.{name} --smoke")
  numbers = [v for v in _numbers(results["results"]) if v is not None]
  assert numbers and all(np.isfinite(numbers))


def test_meta_optimizers_table2_smoke(tmp_path, omniglot):
  # Table 2's conv learner through its most involved rule (KFC adapting
  # itself); MAML's plain SGD rule runs in test_smoke[meta_optimizers].
  meta_optimizers.main(["--smoke", "--table", "2", "--only", "SCNN w/ KFC",
                        "--out", str(tmp_path)])
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["results"]) == {"SCNN w/ KFC"}
  assert np.isfinite(results["results"]["SCNN w/ KFC"]["test_accuracy"])


@pytest.mark.parametrize("method", ["imaml", "maml"])
def test_imaml_omniglot_smoke_reports_how_far_each_inner_loop_got(method, tmp_path, omniglot):
  # iMAML's gradient is exact only at a solution of the proximal inner problem:
  # the example measures |grad inner objective| after adaptation / before it.
  # It also measures the support Hessian's extreme eigenvalues at the adapted
  # parameters: iMAML's CG needs H_S + (reg + damping) I positive definite.
  imaml_omniglot.main(["--smoke", "--method", method, "--damping", "1.5",
                       "--out", str(tmp_path / method)])
  for f in ("results.json", "metrics.jsonl", "learning_curve.png", "checkpoint.npz"):
    assert (tmp_path / method / f).exists(), f
  row = json.loads((tmp_path / method / "results.json").read_text())["results"][method]
  assert np.isfinite(row["test_accuracy"])
  assert 0.0 < row["inner_residual"] < 1.0, row   # the inner loop made progress
  assert row["meta_gradient_temp_bytes"] > 0 and row["meta_gradient_time_s"] > 0
  assert row["lanczos_iterations"] == imaml_omniglot.LANCZOS_ITERATIONS
  floor = -(0.5 + 1.5) if method == "imaml" else 0.0      # reg 0.5 is the default
  for when in ("initial", "final"):
    spectrum = row["support_hessian"][when]
    low, high = np.asarray(spectrum["min_eigenvalue"]), np.asarray(spectrum["max_eigenvalue"])
    assert low.shape == (2,) and np.all(np.isfinite(low)) and np.all(low < high), spectrum
    assert spectrum["indefinite_below"] == floor
    assert spectrum["fraction_indefinite"] == np.mean(low < floor)


def test_optax_inner_loop_smoke_learns_adams_rate_and_reports_both_tasks(tmp_path, omniglot):
  # The swap the example is about: the meta-learned Adam rate through ES-WSR
  # (Omniglot), and through backprop (sine).
  runs = {"omniglot": ["--task", "omniglot", "--estimator", "es_wsr"],
          "sine": ["--task", "sine", "--estimator", "backprop"]}
  for task, extra in runs.items():
    out = tmp_path / "optax_inner_loop" / task
    optax_inner_loop.main(["--smoke", "--inner", "adam_learned_lr", "--out", str(out), *extra])
    row = json.loads((out / "results.json").read_text())["results"]["adam_learned_lr"]
    metric = "test_mse" if task == "sine" else "test_accuracy"
    assert np.isfinite(row[metric]) and row["meta_gradient_temp_bytes"] > 0
    # The learned rate moved off its start (0.01) by about a meta-step (Adam 1e-3 x 4).
    assert row["learning_rate"] != 0.01 and abs(row["learning_rate"] - 0.01) < 0.01
  block = report.render(report.load(tmp_path), ["optax_inner_loop"])["optax_inner_loop"]
  assert "**Sine regression**" in block and "**Omniglot**" in block, block
  assert "| es_wsr | 4 | Adam, meta-learned lr (from 0.01) |" in block, block
  assert "| backprop | 4 | Adam, meta-learned lr (from 0.01) |" in block, block


def test_imaml_omniglot_refuses_negative_damping(tmp_path):
  with pytest.raises(SystemExit, match="--damping"):
    imaml_omniglot.main(["--smoke", "--damping", "-1", "--out", str(tmp_path / "bad")])


def _numbers(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _numbers(v)
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield float(tree)


def _final_params(out):
  with np.load(pathlib.Path(out) / "checkpoint.npz") as data:
    return int(data["step"]), [data[k] for k in sorted(data.files) if k.startswith("leaf")]


def _steps_logged(path):
  return [json.loads(l)["step"] for l in path.read_text().splitlines()]


@pytest.mark.parametrize("module,sub,extra", [
    (es_protonet, "", ["--estimator", "es_wsr", "--image_size", "28", "--test_episodes", "4",
                       "--val_episodes", "4"]),
    (sine_meta_learning, "meta_sgd", ["--method", "meta_sgd"]),
])
def test_kill_and_resume_gives_same_final_parameters(module, sub, extra, tmp_path, omniglot):
  common = ["--smoke", "--checkpoint_every", "2", "--log_every", "2"] + extra
  module.main(common + ["--steps", "6", "--out", str(tmp_path / "straight")])
  # "Killed" after step 4 (last checkpoint at 4), after logging a row for a
  # step 5 that the checkpoint does not hold; then resumed to 6.
  module.main(common + ["--steps", "4", "--out", str(tmp_path / "resumed")])
  log = tmp_path / "resumed" / sub / "metrics.jsonl"
  with log.open("a") as f:
    f.write(json.dumps({"step": 5, "loss": 0.0}) + "\n")
  module.main(common + ["--steps", "6", "--resume", "--out", str(tmp_path / "resumed")])
  step_a, a = _final_params(tmp_path / "straight" / sub)
  step_b, b = _final_params(tmp_path / "resumed" / sub)
  assert step_a == step_b == 6
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  # The resumed run continued rather than restarted, and dropped the row the
  # "killed" run wrote after its checkpoint.
  assert _steps_logged(log) == [2, 4, 6]


def test_resume_refuses_changed_flags_and_missing_checkpoint(tmp_path, capsys):
  base = ["--smoke", "--method", "maml", "--out", str(tmp_path)]
  with pytest.raises(SystemExit, match="no checkpoint"):
    sine_meta_learning.main(base + ["--resume"])
  sine_meta_learning.main(base + ["--steps", "2", "--log_every", "2", "--checkpoint_every", "2"])
  with pytest.raises(SystemExit, match=r"--inner_lr 0.01 -> 0.02"):
    sine_meta_learning.main(base + ["--steps", "4", "--resume", "--inner_lr", "0.02"])
  # Flags that do not change the trajectory may differ.
  sine_meta_learning.main(base + ["--steps", "4", "--resume", "--log_every", "1",
                                  "--test_tasks", "10"])


def test_same_command_same_numbers(tmp_path):
  runs = []
  for name in ("a", "b"):
    sine_meta_learning.main(["--smoke", "--method", "turtle", "--out", str(tmp_path / name)])
    runs.append(json.loads((tmp_path / name / "results.json").read_text())["results"])
  assert runs[0] == runs[1]


@pytest.mark.parametrize("module", [es_protonet, meta_optimizers, evograd_toy])
def test_help_shows_defaults(module, capsys):
  with pytest.raises(SystemExit):
    module.main(["--help"])
  assert "(default:" in capsys.readouterr().out


@pytest.mark.parametrize("module,argv", [
    (es_protonet, ["--population", "0"]),
    (es_protonet, ["--way", "5000"]),
    (es_protonet, ["--coordinator", "localhost:1"]),
    (sine_meta_learning, ["--inner_lr", "-1"]),
    (sine_meta_learning, ["--imaml_damping", "-1"]),
    (meta_optimizers, ["--only", "LR w/ Adam"]),
    (evograd_toy, ["--copies", "1"]),
    (evograd_rotation, ["--population", "1"]),
    # Flags of training loops are not accepted by examples that do not train.
    (evograd_toy, ["--resume"]),
    (estimator_showdown, ["--checkpoint_every", "5"]),
    (meta_learning_rates, ["--configs", "backprop/4:adam:1e-3"]),
    (meta_learning_rates, ["--configs", "es:sgd:1"]),
    (meta_learning_rates, ["--configs", "es/4:rmsprop:1"]),
])
def test_impossible_flags_exit_with_message(module, argv, tmp_path, omniglot, capsys):
  with pytest.raises(SystemExit) as err:
    module.main(argv + ["--smoke", "--out", str(tmp_path)])
  assert "error" in str(err.value) + capsys.readouterr().err


def test_report_aggregates_seeds(tmp_path):
  for seed, acc in ((0, 0.8), (1, 0.9)):
    out = tmp_path / "kronecker_t1" / "per_task" / f"seed{seed}"
    out.mkdir(parents=True)
    row = {"test_accuracy": acc, "inner_lr": 0.5, "meta_lr": 0.01, "paper_inner_lr": 0.5,
           "paper_meta_lr": 0.01, "diverged_at": None}
    (out / "results.json").write_text(json.dumps({
        "flags": {"points": "per_task"}, "seed": seed, "command": f"python -m x --seed {seed}",
        "device": {"kind": "cpu", "count": 1}, "wall_time_s": 60.0,
        "results": {"LR w/ MAML": row}, "ceilings": {"plain_step": 0.83}}))
  with pytest.raises(ValueError, match="schema 1.*migrate_results"):
    report.load(tmp_path)                  # an old layout is refused, not guessed at
  migrate_results.main([str(tmp_path)])
  text = report.render(report.load(tmp_path), ["kronecker_t1"])["kronecker_t1"]
  assert "85.00 ± 7.07" in text            # mean and sample std over the two seeds
  assert "--seed S" in text
  readme = tmp_path / "README.md"
  readme.write_text("a\n<!-- report:kronecker_t1 -->\nold\n<!-- /report:kronecker_t1 -->\nb\n")
  assert report.rewrite_readme(readme, {"kronecker_t1": "NEW"}) == ["kronecker_t1"]
  assert readme.read_text() == "a\n<!-- report:kronecker_t1 -->\nNEW\n<!-- /report:kronecker_t1 -->\nb\n"


def test_resume_of_a_multi_run_example_starts_the_runs_that_had_not_started(tmp_path, capsys):
  # Killed during its first run: the later runs have no directory yet.
  base = ["--smoke", "--method", "all", "--steps", "2", "--log_every", "2",
          "--checkpoint_every", "2", "--out", str(tmp_path)]
  sine_meta_learning.main(base)
  _assert_a_complete_smoke_run(
      tmp_path, "sine_meta_learning",
      [f"{m}/{f}" for m in sine_meta_learning.METHODS for f in ("checkpoint.npz", "metrics.jsonl",
                                                                 "learning_curve.png")])
  first = json.loads((tmp_path / "results.json").read_text())["results"]
  assert set(first) == set(sine_meta_learning.METHODS)
  shutil.rmtree(tmp_path / "imaml")
  capsys.readouterr()
  sine_meta_learning.main(base + ["--resume"])
  said = capsys.readouterr().out
  assert "[sine: maml] resumed from step 2" in said
  assert "no checkpoint yet" in said and "imaml" in said
  record = json.loads((tmp_path / "results.json").read_text())
  assert record["results"] == first   # same key, same result, resumed or not
  # The resumed runs' earlier segments count in the total wall time.
  assert record["wall_time_s"] > record["wall_time_segment_s"] > 0, record


def test_report_cells_for_one_run_and_diverged_values():
  assert reporting.Stat([0.8]).pm(100) == "80.00 (1 run)"     # no made-up ± 0.00
  assert reporting.Stat([1.4e7, 1.4e7]).pm(1, 4) == "1.4e+07 ± 0"
  assert reporting.Stat([2.0e7]).pm(1, 4) == "2e+07 (1 run)"
  assert reporting.Stat([]).pm() == "-"


def test_sine_imaml_leaves_unsolved_tasks_out_and_counts_them(tmp_path):
  # With the default solver (L-BFGS with a line search) every smoke task's proximal
  # problem is solved. With SGD at step 1.0 it diverges on every task: none enters
  # the meta-gradient, the step has no meta-loss (NaN, not 0), and the run stops there.
  def run(name, *flags):
    sine_meta_learning.main(["--smoke", "--method", "imaml", *flags,
                             "--out", str(tmp_path / name)])
    return json.loads((tmp_path / name / "results.json").read_text())["results"]["imaml"]
  solved = run("solved")
  assert solved["unsolved_tasks"] < 1e-6 and solved["diverged_at"] is None
  assert np.isfinite(solved["test_mse"])
  unsolved = run("unsolved", "--imaml_solver", "sgd", "--imaml_lr", "1.0")
  assert unsolved["unsolved_tasks"] == 1.0
  assert unsolved["diverged_at"] == 2                      # the first logged step
  rows = [json.loads(line) for line in
          (tmp_path / "unsolved" / "imaml" / "metrics.jsonl").read_text().splitlines()]
  assert np.isnan(rows[0]["meta_loss"]) and rows[0]["unsolved"] == 1.0


def test_report_sine_median_over_seeds_counts_a_diverged_seed_as_worst(tmp_path):
  # Fig. 3.3 of the TURTLE paper plots the median over runs. One outlying seed moves
  # turtle's mean (1.5) but not its median (1.0). iMAML's rows come from its own runs,
  # one per inner-solver setting; at 0.01 x 20 it diverged in 2 of 3 seeds, so that
  # row's median is "diverged" and its mean is over the one seed that finished.
  def write(folder, seed, results, **flags):
    out = tmp_path / folder / f"seed{seed}"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({
        "flags": {"steps": 10, "imaml_reg": 20.0, "imaml_cg_steps": 5, **flags}, "seed": seed,
        "command": f"python -m examples.sine_meta_learning --seed {seed}",
        "device": {"kind": "cpu", "count": 1},
        "wall_time_s": 60.0, "results": results}))
  for seed, (mse, diverged_at) in enumerate(((1.0, None), (0.5, 3500), (3.0, 5000))):
    write("sine", seed, {"turtle": {"test_mse": mse, "diverged_at": None},
                         "imaml": {"test_mse": 9.0, "diverged_at": None}})
    write("sine_imaml/lr0.01_steps20", seed,
          {"imaml": {"test_mse": float("nan") if diverged_at else 2.0, "diverged_at": diverged_at}},
          imaml_lr=0.01, imaml_steps=20)
    write("sine_imaml/lr0.0025_steps80", seed, {"imaml": {"test_mse": 1.0 + seed,
                                                          "unsolved_tasks": 0.001 * seed,
                                                          "diverged_at": None}},
          imaml_lr=0.0025, imaml_steps=80, imaml_damping=0.0)
  migrate_results.main([str(tmp_path)])        # schema-1 files: iMAML then meant SGD
  text = sine_meta_learning.report(report.load(tmp_path))["sine"]
  assert "| turtle | 1.500 ± 1.323 | 1.000 | 3 |" in text
  assert "| maml | - | - | 0 |" in text
  assert "| imaml | " not in text and "9.000" not in text   # superseded by its own runs
  assert ("| imaml (inner step 0.01 x 20) | 2.000 (1 run) (2 of 3 diverged, at steps 3500, "
          "5000) | diverged | 3 |") in text
  assert ("| imaml (inner step 0.0025 x 80; 0.1% of training tasks unsolved) | 2.000 ± 1.000 "
          "| 2.000 | 3 |") in text
  assert text.index("0.01 x 20") < text.index("0.0025 x 80")


def test_report_late_change_reads_the_curve_from_70_percent_of_the_steps():
  curve = [[100, 0.50], [600, 0.70], [700, 0.80], [800, 0.90], [1000, 0.82]]
  assert abs(reporting.late_change(curve) - 0.02) < 1e-12    # 0.82 - value at step 700
  assert reporting.late_change([[500, 0.3]]) is None and reporting.late_change(None) is None


def test_report_table2_adds_rows_rerun_at_another_meta_lr(tmp_path):
  def write(folder, seed, rows, meta_lr):
    out = tmp_path / folder / f"seed{seed}"
    out.mkdir(parents=True)
    results = {name: {"test_accuracy": acc, "meta_lr": meta_lr or 0.003,
                      "train_curve": [[100, 0.5], [700, acc], [1000, acc + 0.01]],
                      "train_loss_curve": [[100, 2.0], [1000, 1.0]]}
               for name, acc in rows.items()}
    (out / "results.json").write_text(json.dumps({
        "flags": {"meta_lr": meta_lr, "steps": 1000}, "seed": seed, "wall_time_s": 60.0,
        "command": f"python -m x --seed {seed} --out {folder}/seed{seed}",
        "device": {"kind": "cpu", "count": 1}, "results": results}))
  paper = {"SCNN w/ MAML": 0.6, "SCNN w/ MSGD": 0.7, "SCNN w/ MC": 0.8, "SCNN w/ KFC": 0.5}
  for seed in (0, 1):
    write("kronecker_t2", seed, paper, None)
    write("kronecker_t2_kfc_meta_lr/0.001", seed, {"SCNN w/ KFC": 0.9}, 0.001)
  migrate_results.main([str(tmp_path)])
  text = report.render(report.load(tmp_path), ["kronecker_t2"])["kronecker_t2"]
  assert "| SCNN w/ KFC, meta lr 0.001 (deviation) |" in text
  assert "at the paper's rates: KFC < MAML < MSGD < MC" in text
  assert "with KFC, meta lr 0.001: MAML < MSGD < MC < KFC, meta lr 0.001" in text
  assert "| 1.0 ± 0.0 |" in text      # the curves' change over their last 30% of steps


def test_report_imaml_rows_by_damping_with_the_support_spectrum(tmp_path):
  def write(folder, seed, method, acc, damping=None, lows=None, lanczos=None):
    out = tmp_path / "imaml" / folder / f"seed{seed}"
    out.mkdir(parents=True)
    flags = {"way": 5, "shot": 1, "channels": 16, "inner_steps": 10, "inner_lr": 0.1,
             "reg": 0.5, "cg_steps": 5, "meta_batch": 8, "meta_lr": 0.001, "steps": 200,
             "test_tasks": 300}
    row = {"test_accuracy": acc, "inner_residual": 0.03, "meta_gradient_temp_bytes": 2**20,
           "meta_gradient_time_s": 1.0}
    if damping is not None:
      flags.update(damping=damping, spectrum_tasks=3)
      row["support_hessian"] = {
          when: {"min_eigenvalue": lows, "max_eigenvalue": [10.0] * 3,
                 "indefinite_below": -(0.5 + damping),
                 "fraction_indefinite": float(np.mean(np.asarray(lows) < -(0.5 + damping)))}
          for when in ("initial", "final")}
    if lanczos is not None:
      row["lanczos_iterations"] = lanczos
    (out / "results.json").write_text(json.dumps({
        "flags": flags, "seed": seed, "wall_time_s": 60.0, "results": {method: row},
        "command": f"python -m examples.imaml_omniglot --seed {seed} --out {folder}/seed{seed}",
        "device": {"kind": "cpu", "count": 1}}))
  for seed in (0, 1):
    write("maml", seed, "maml", 0.8)
    write("imaml", seed, "imaml", 0.6)                       # before --damping existed
    write("imaml_damping2.5", seed, "imaml", 0.7 + 0.1 * seed, 2.5, [-1.0, -4.0, -2.0])
    write("fomaml", seed, "fomaml", 0.75, 2.5, [-0.5, -0.25, -0.75], lanczos=40)
  migrate_results.main([str(tmp_path)])    # the flags and counts of their time, written in
  text = imaml_omniglot.report(report.load(tmp_path))["imaml"]
  # MAML-style rows show the spectrum but solve no CG system: no indefinite cell.
  assert "| fomaml | 75.00 ± 0.00 | 0.03 ± 0.00 | -0.50 ± 0.00 → -0.50 ± 0.00 | - |" in text
  assert "| imaml, damping 0 | 60.00 ± 0.00 | 0.03 ± 0.00 | - | - |" in text
  # Median lambda_min -2.0 at both ends; -4.0 is the one of 3 tasks below -3.
  assert "| imaml, damping 2.5 | 75.00 ± 7.07 | 0.03 ± 0.00 | -2.00 ± 0.00 → -2.00 ± 0.00 | " \
         "33 ± 0% (below -3) |" in text
  # Runs from before the iteration count and --num_blocks were stored used 80 and 4.
  assert "80 Lanczos steps" in text and "3 test episodes" in text
  assert "conv4 with 16 channels" in text
  # ... and runs that store their count report it beside the older ones'.
  assert "Eigenvalues: 40/80 Lanczos steps" in text
  assert reporting.conv_net({"num_blocks": 2}) == "conv2"
  # Undamped runs from before the flag reproduce under today's default only with --damping 0.
  assert "--out imaml/seedS --damping 0" in text
  assert text.endswith("--out imaml_damping2.5/seedS\n"
                       "    python -m examples.imaml_omniglot --seed S --out maml/seedS")


def test_report_learning_rates_counts_diverged_seeds_apart_from_the_mean(tmp_path):
  def record(seed, final, diverged_at=None):
    row = {"estimator": "forward_gradient", "population": 1, "optimizer": "sgd", "lr": 1e-4,
           "start_meta_loss": 6.0, "final_meta_loss": final, "diverged_at": diverged_at,
           "curve": [[0, 6.0], [300, final]]}
    return {"_path": f"meta_learning_rates/seed{seed}", "seed": seed,
            "flags": {"inner_steps": 5, "inner_lr": 0.01, "meta_batch": 4, "steps": 300,
                      "test_tasks": 200, "sigma": 0.01},
            "command": f"python -m examples.meta_learning_rates --seed {seed}",
            "device": {"kind": "cpu", "count": 1}, "results": {"forward_gradient/1:sgd:0.0001": row}}
  records = [record(0, 5.0), record(1, 5.5), record(2, float("nan"), 100)]
  text = meta_learning_rates.report(records, tmp_path)
  assert (tmp_path / "meta_learning_rates.png").stat().st_size > 0
  row = next(l for l in text["learning_rates"].splitlines() if l.startswith("| forward_gradient"))
  assert "5.25 ± 0.35 (1 of 3 diverged) | -0.75 ± 0.35 | 3 |" in row
  assert "--seed S" in text["learning_rates"]
