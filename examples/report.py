"""Aggregates the examples' ``results.json`` files into the README's result tables.

    python -m examples.report examples/results                 # print every table
    python -m examples.report examples/results --readme README.md   # rewrite its blocks

Every experiment writes ``results.json`` (flags, seed, git commit, device, wall
time, final metrics; see ``examples/common.py``). Runs of one configuration
differ only in ``--seed``; this script groups them, reports mean +- std (or a
Student-t 95% confidence interval) over seeds, draws one PNG per sweep, and
replaces each ``<!-- report:NAME -->`` ... ``<!-- /report:NAME -->`` block of
the README with the table of that name. The README's "Reproducing the papers"
numbers come only from here.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import statistics
from typing import Callable, Iterable

import numpy as np

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
  """``conv4`` or, for runs with fewer blocks (``--num_blocks``), ``conv<k>``; runs from
  before the flag existed used 4."""
  return f"conv{flags.get('num_blocks', 4)}"


def device(records: list[dict]) -> str:
  kinds = sorted({f"{r['device']['kind']} x{r['device']['count']}" for r in records
                  if "device" in r})
  return ", ".join(kinds) or "-"


def commands(records: list[dict]) -> str:
  """The commands that produced ``records``, with the seed generalised."""
  cmds = sorted({re.sub(r"(--seed |/seed)\d+", r"\1S", r.get("command", ""))
                 .replace(" --resume", "").replace(" --overwrite", "") for r in records})
  return "\n".join(f"    {c}" for c in cmds if c)


# ---------------------------------------------------------------- Kronecker
KRONECKER_T1_ROWS = ("LR w/ MAML", "LR + LinNet w/ MAML", "LR w/ KLin", "LR w/ KFC")
PAPER_T1 = {"LR w/ MAML": "51.38 ± 3.91", "LR + LinNet w/ MAML": "95.77 ± 0.41",
            "LR w/ KLin": "99.00 ± 0.08", "LR w/ KFC": "98.98 ± 0.10"}
CEILINGS = {"closed_form_one_step": "one SGD step from θ = 0, closed form",
            "plain_step": "one SGD step from θ = 0, measured",
            "oracle_linear_step": "best linear map of the first gradient (oracle)",
            "least_squares_fit": "per-task least-squares fit (no meta-learning)"}


def kronecker_t1(records: list[dict]) -> str:
  runs = {p: under(records, f"kronecker_t1/{p}") for p in ("per_task", "shared")}
  header = ["row", "paper (synthetic)"] + [
      f"{p.replace('_', '-')} points: acc. % (mean ± std, {len(runs[p])} seeds)"
      for p in runs] + ["adaptation / meta lr used (paper)"]
  rows = []
  for name in KRONECKER_T1_ROWS:
    cells, lrs = [], ""
    for p, rs in runs.items():
      res = [r["results"][name] for r in rs if name in r.get("results", {})]
      stat = Stat(x["test_accuracy"] for x in res)
      div = sum(1 for x in res if x.get("diverged_at"))
      cells.append(stat.pm(100) + (f" ({div} diverged)" if div else ""))
      if res:
        x = res[0]
        lrs = (f"{x['inner_lr']:g} / {x['meta_lr']:g} ({x['paper_inner_lr']:g} / "
               f"{x['paper_meta_lr']:g})")
    rows.append([name, PAPER_T1[name], *cells, lrs])
  for key, label in CEILINGS.items():
    cells = []
    for rs in runs.values():
      values = [r["ceilings"][key] for r in rs if key in r.get("ceilings", {})]
      cells.append(Stat(values).pm(100) if values else "-")
    rows.append([f"*ceiling: {label}*", "", *cells, ""])
  everything = runs["per_task"] + runs["shared"]
  return (table(header, rows) + f"\n\nMeasured on {device(everything)}; "
          f"{wall(everything)} per seed (4 rows + ceilings). Commands:\n\n"
          + commands(everything))


def kronecker_t1_sweep(records: list[dict]) -> str:
  runs = under(records, "kronecker_t1_lr_sweep")
  cells: dict = {}
  lrs = set()
  for r in runs:
    points = r["flags"]["points"]
    lr = r["flags"]["inner_lr"]
    lrs.add(lr)
    for name, x in r["results"].items():
      value = (f"NaN at step {x['diverged_at']}" if x.get("diverged_at")
               else f"{100 * x['test_accuracy']:.1f}")
      cells[(points, name, lr)] = value
  lrs = sorted(lrs, reverse=True)
  header = ["reading", "row"] + [f"lr {lr:g}" for lr in lrs]
  rows = []
  for points in ("per_task", "shared"):
    for name in ("LR + LinNet w/ MAML", "LR w/ KLin", "LR w/ KFC"):
      if any((points, name, lr) in cells for lr in lrs):
        rows.append([points.replace("_", "-"), name] + [cells.get((points, name, lr), "-")
                                                       for lr in lrs])
  return (table(header, rows) + "\n\nTest accuracy % after 30,000 steps (seed 0), adaptation "
          "and meta learning rate tied as in A.1.1; \"NaN at step s\": training diverged.")


KRONECKER_T2_ROWS = ("SCNN w/ MAML", "SCNN w/ MSGD", "SCNN w/ MC", "SCNN w/ KFC")
PAPER_T2 = {"SCNN w/ MAML": "60.94 ± 1.54", "SCNN w/ MSGD": "69.25 ± 0.81",
            "SCNN w/ MC": "85.70 ± 0.91", "SCNN w/ KFC": "91.13 ± 0.93"}


def late_change(curve, fraction: float = 0.3) -> float | None:
  """How much a logged curve ``[[step, value], ...]`` still moved over its last
  ``fraction`` of steps: last value minus the value logged at (1 - fraction)
  of the way (window means); None without a curve."""
  if not curve or len(curve) < 2:
    return None
  start = curve[-1][0] * (1 - fraction)
  before = [v for s, v in curve if s <= start] or [curve[0][1]]
  return curve[-1][1] - before[-1]


def kronecker_t2(records: list[dict]) -> str:
  runs = under(records, "kronecker_t2")
  if not runs:
    return "*(no runs)*"
  flags = runs[0]["flags"]
  # Rows re-run at another meta learning rate (a deviation), one folder per rate.
  reruns = under(records, "kronecker_t2_kfc_meta_lr")
  entries = [(name, name, runs) for name in KRONECKER_T2_ROWS]
  for lr in sorted({r["flags"]["meta_lr"] for r in reruns}, reverse=True):
    at_lr = [r for r in reruns if r["flags"]["meta_lr"] == lr]
    for name in KRONECKER_T2_ROWS:
      if any(name in r["results"] for r in at_lr):
        entries.append((f"{name}, meta lr {lr:g} (deviation)", name, at_lr))
  rows, means = [], {}
  for label, name, source in entries:
    res = [r["results"][name] for r in source if name in r.get("results", {})]
    late = [d for d in (late_change(x.get("train_curve")) for x in res) if d is not None]
    lrs = sorted({x["meta_lr"] for x in res})
    curves = [x["train_curve"] for x in res if x.get("train_curve")]
    peak_last = (f"{100 * Stat(max(v for _, v in c) for c in curves).mean:.1f} → "
                 f"{100 * Stat(c[-1][1] for c in curves).mean:.1f}") if curves else "-"
    losses = [max(v for _, v in x["train_loss_curve"]) for x in res if x.get("train_loss_curve")]
    accuracy = Stat(x["test_accuracy"] for x in res)
    rows.append([label, PAPER_T2[name], accuracy.pm(100),
                 Stat(late).pm(100, 1) if late else "-", peak_last,
                 ", ".join(f"{v:.3g}" for v in losses) or "-",
                 "/".join(f"{v:g}" for v in lrs), len(res)])
    means[label] = accuracy.mean
  short = lambda label: label.replace("SCNN w/ ", "").replace(" (deviation)", "")
  order = lambda labels: " < ".join(short(n) for n in sorted(labels, key=means.get))
  orders = f"Measured order (worst to best) at the paper's rates: {order(KRONECKER_T2_ROWS)}"
  for label, name, _ in entries[len(KRONECKER_T2_ROWS):]:
    swapped = [label if n == name else n for n in KRONECKER_T2_ROWS]
    orders += f"; with {short(label)}: {order(swapped)}"
  settings = (f"{flags.get('way')}-way {flags.get('shot')}-shot, SCNN with "
              f"{flags.get('channels')} channels, meta-batch {flags.get('meta_batch')}, "
              f"{flags.get('inner_steps')} adaptation steps, {flags.get('steps')} meta-steps, "
              f"{flags.get('test_tasks')} test tasks" if flags else "")
  return (table(["row", "paper (10-way 5-shot, 64 ch)", "metagrad: acc. % (mean ± std over seeds)",
                 "train acc. change over the last 30% of steps (pts)",
                 "train acc. %: best logged → last (mean)",
                 "largest logged train loss, per seed", "meta lr (paper: 0.003)",
                 "seeds"], rows)
          + f"\n\nSettings: {settings}. {orders}; paper: MAML < MSGD < MC < KFC. "
          f"{wall(runs)} per run of the paper-rate rows, {device(runs + reruns)}. "
          f"Commands:\n\n" + commands(runs + reruns))


def rotation(records: list[dict]) -> str:
  runs = under(records, "evograd_rotation")
  get = lambda run, key: Stat(r["results"][run][key] for r in runs if run in r["results"])
  rows = [["baseline (λ = 0, train upright)", "81.79 ± 0.64", get("baseline", "test_accuracy").pm(100), "-"],
          ["true rotation (λ = 30° fixed)", "98.40", get("true_angle", "test_accuracy").pm(100), "30"],
          ["EvoGrad (λ learned)", "98.11 ± 0.32 (28.47° ± 5.23)",
           get("evograd", "test_accuracy").pm(100), get("evograd", "learned_angle").pm(1, 2)],
          ["T1-T2 (λ learned)", "-", get("t1_t2", "test_accuracy").pm(100),
           get("t1_t2", "learned_angle").pm(1, 2)]]
  angles = {m: [r["results"][m]["learned_angle"] for r in runs if m in r["results"]]
            for m in ("evograd", "t1_t2")}
  flags = runs[0]["flags"] if runs else {}
  truth = flags.get("angle", 30.0)
  per_seed = "; ".join(
      f"{name} {', '.join(f'{a:.1f}' for a in angles[m])} (largest |λ − {truth:g}°|: "
      f"{max(abs(a - truth) for a in angles[m]):.1f}°)"
      for m, name in (("evograd", "EvoGrad"), ("t1_t2", "T1-T2")) if angles[m])
  return (table(["run", "paper (MNIST, 5 seeds)", f"rotated-test accuracy % ({len(runs)} seeds)",
                 "learned angle ° (mean ± std)"], rows)
          + f"\n\nLearned angles per seed: {per_seed}. Omniglot "
          f"({flags.get('classes')} characters, {flags.get('train_per_class')} upright training "
          f"images each, {runs[0].get('test_images') if runs else '-'} rotated test images); "
          f"EvoGrad K = {flags.get('population')}, {flags.get('keys')} key per step, sign noise, "
          f"σ = {flags.get('sigma')}, τ = {flags.get('temperature')}; Adam "
          f"{flags.get('hyper_lr')}°/step on λ with {flags.get('hyper_decay')} decay; "
          f"{flags.get('steps')} steps. {wall(runs)} per seed (4 runs), {device(runs)}. "
          f"Commands:\n\n" + commands(runs))


def evograd_toy(records: list[dict]) -> str:
  runs = under(records, "evograd_toy")
  if not runs:
    return "*(no runs)*"
  res = runs[0]["results"]
  rows = [[k, f"{v['correlation_with_truth']:.3f}", f"{v['mean_abs_error']:.4f}",
           f"{v['mean_std']:.3f}", f"{v['final_distance_evograd_vs_exact']:.3f}"]
          for k, v in res.items()]
  return (table(["copies K", "corr(mean estimate, truth)", "mean abs. error", "mean std",
                 "final (x, λ) gap to exact-hypergradient paths"], rows)
          + "\n\nFig. 2 / 3 of EvoGrad (τ = 0.5, ε ~ N(0, 1), 100 repetitions, 5 SGD steps of "
          "lr 0.1 from 5 starts); plots in the run directory. Command:\n\n" + commands(runs))


ES_SWEEPS = {
    "population (σ = 0.01, α = 1)": ["es_wsr_P16_sigma0.01", "es_wsr_P64_sigma0.01",
                                     "es_wsr_P256_sigma0.01"],
    "σ with the paper's matching α (P = 64)": ["es_wsr_P64_sigma0.001", "es_wsr_P64_sigma0.01",
                                               "es_wsr_P64_sigma0.1"],
    "estimator at the same budget": ["backprop", "es_wsr_P64_sigma0.01",
                                     "es_wsr_P64_sigma0.01_antithetic", "finite_difference_n64"],
}
ES_PLOT_NAMES = dict(zip(ES_SWEEPS, ("population", "sigma", "estimator")))
ES_LABELS = {
    "es_wsr_P16_sigma0.01": "ES-WSR, P = 16", "es_wsr_P64_sigma0.01": "ES-WSR, P = 64",
    "es_wsr_P256_sigma0.01": "ES-WSR, P = 256", "es_wsr_P64_sigma0.001": "σ = 0.001, α = 0.1",
    "es_wsr_P64_sigma0.1": "σ = 0.1, α = 10", "backprop": "backprop (Adam 1e-3)",
    "es_wsr_P64_sigma0.01_antithetic": "ES-WSR, P = 64, antithetic pairs",
    "finite_difference_n64": "FD, 64 random coordinates/step (Adam 1e-3)",
}


def es_protonet(records: list[dict], plots: pathlib.Path | None = None) -> str:
  runs = under(records, "es_protonet")
  by_config: dict = {}
  for r in runs:
    by_config.setdefault(r["_path"].split("/")[1], []).append(r)
  stat = lambda c: Stat(next(iter(r["results"].values()))["test_accuracy"]
                        for r in by_config.get(c, []))
  parts = []
  for title, configs in ES_SWEEPS.items():
    # In the σ sweep the shared P = 64 run is the σ = 0.01 point.
    label = lambda c: ("σ = 0.01, α = 1" if ES_PLOT_NAMES[title] == "sigma"
                       and c == "es_wsr_P64_sigma0.01" else ES_LABELS[c])
    rows = [[label(c), stat(c).pm(100, ci=True), stat(c).n] for c in configs if c in by_config]
    parts.append(f"**{title}**\n\n" + table(
        ["configuration", "test accuracy % (mean ± 95% CI over seeds)", "seeds"], rows))
    png = f"es_protonet_{ES_PLOT_NAMES[title]}.png"
    if plots is not None and rows:
      _bar_plot(plots / png, title, [label(c) for c in configs if c in by_config],
                [stat(c) for c in configs if c in by_config])
    if rows:  # linked where it is written (the runs directory)
      parts[-1] += f"\n\n![{title}]({(plots or pathlib.Path('examples/results')) / png})"
  flags = runs[0]["flags"] if runs else {}
  return ("\n\n".join(parts)
          + f"\n\nOmniglot 5-way 5-shot (train and test), the paper's 4804/1012/676 class split, "
          f"{conv_net(flags)} with {flags.get('channels')} channels on {flags.get('image_size')}x"
          f"{flags.get('image_size')} images, {flags.get('steps')} training episodes (paper: "
          f"20,000 with 16-64 channels on TPUs), {flags.get('test_episodes')} test episodes per "
          f"seed; SGD at the paper's α for ES, Adam for backprop and FD; chunks of 8 members. "
          f"{device(runs)}; {wall(runs)} per run on "
          f"average. Commands:\n\n" + commands(runs))


def _bar_plot(png: pathlib.Path, title: str, labels: list[str], stats: list[Stat]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.4))
  ax.bar(range(len(labels)), [100 * s.mean for s in stats],
         yerr=[100 * s.ci95 for s in stats], capsize=4)
  for i, s in enumerate(stats):
    ax.plot([i] * s.n, [100 * v for v in s.values], "k.", ms=4)
  ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
  ax.set_ylabel("test accuracy % (95% CI)")
  lo = min(100 * min(s.values) for s in stats if s.values)
  ax.set_ylim(max(0, lo - 5), 100)
  ax.set_title(f"ES-ProtoNet: {title}")
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  plt.close(fig)


CURVE_RUNS = {"backprop": "backprop (Adam 1e-3)", "es_wsr_P64_sigma0.01": "ES-WSR (P = 64, σ = 0.01, α = 1)"}


def es_protonet_curve(records: list[dict], plots: pathlib.Path | None = None) -> str:
  """ES-WSR vs backprop test accuracy at growing training budgets (``--test_at``)."""
  runs = {c: under(records, f"es_protonet_curve/{c}") for c in CURVE_RUNS}
  if not any(runs.values()):
    return "*(no runs)*"
  curves = {c: [next(iter(r["results"].values()))["test_curve"] for r in rs]
            for c, rs in runs.items()}
  steps = sorted({pt["step"] for cs in curves.values() for c in cs for pt in c})
  at = lambda c, s, key: Stat(pt[key] for curve in curves[c] for pt in curve if pt["step"] == s)
  rows = []
  for s in steps:
    bp, es = at("backprop", s, "test_accuracy"), at("es_wsr_P64_sigma0.01", s, "test_accuracy")
    gap = Stat(b - e for b, e in zip(bp.values, es.values)) if bp.n and es.n else Stat([])
    rows.append([f"{s:,}", bp.pm(100, ci=True), es.pm(100, ci=True), gap.pm(100, ci=True),
                 f"{at('backprop', s, 'train_s').mean:.0f} s",
                 f"{at('es_wsr_P64_sigma0.01', s, 'train_s').mean:.0f} s", f"{bp.n} / {es.n}"])
  # A power law gap ~ episodes^-a fitted (least squares in log-log) to the
  # mean gaps, and the budget it implies for the paper's 1.3 points: an
  # extrapolation, labelled as one.
  gaps = [(s, at("backprop", s, "test_accuracy").mean - at("es_wsr_P64_sigma0.01", s,
                                                          "test_accuracy").mean) for s in steps]
  gaps = [(s, g) for s, g in gaps if math.isfinite(g) and g > 0]
  trend = ""
  if len(gaps) >= 3:
    xs, ys = np.log([s for s, _ in gaps]), np.log([100 * g for _, g in gaps])
    slope, intercept = np.polyfit(xs, ys, 1)
    if slope < 0:
      implied = math.exp((math.log(1.3) - intercept) / slope)
      at_paper = math.exp(intercept) * 20_000 ** slope
      trend = (f" Fitted to the mean gaps, gap ≈ {math.exp(intercept):.3g} · episodes^"
               f"{slope:.2f} points; extrapolated (not measured), that is {at_paper:.1f} points "
               f"at the paper's 20,000 episodes, and 1.3 points would need about "
               f"{implied:,.0f} episodes at these settings.")
    else:
      trend = f" The mean gap does not shrink with the budget (log-log slope {slope:+.2f})."
  memory = {r["_path"].split("/")[-1]: r["memory"]["temp_bytes"] / 2**20
            for r in under(records, "es_protonet_curve/memory")}
  png = "es_protonet_curve.png"
  if plots is not None:
    _curve_plot(plots / png, curves, steps)
  flags = next(r for rs in runs.values() for r in rs)["flags"]
  mem = ", ".join(f"{name} {mib:.1f} MiB" for name, mib in sorted(memory.items()))
  return (table(["training episodes", "backprop: test acc. % (± 95% CI)",
                 "ES-WSR: test acc. % (± 95% CI)", "gap (points, paired by seed)",
                 "backprop training time", "ES-WSR training time", "seeds"], rows)
          + f"\n\n![ES-WSR vs backprop]({(plots or pathlib.Path('examples/results')) / png})"
          + f"\n\nOmniglot 5-way 5-shot, the paper's class split, {conv_net(flags)} with "
          f"{flags['channels']} channels on {flags['image_size']}x{flags['image_size']} images, "
          f"chunks of {flags['chunk_size']} members; each point is the same "
          f"{flags['test_episodes']} test episodes per seed (95% CI over seeds, Student t). "
          f"Training time counts the training steps only (compiles included, evaluations not). "
          f"XLA temporaries of one training step (meta-gradient + update): {mem} "
          f"(`--memory_only`).{trend} {device([r for rs in runs.values() for r in rs])}. "
          f"Commands:\n\n"
          + commands([r for rs in runs.values() for r in rs]
                     + under(records, "es_protonet_curve/memory")))


def _curve_plot(png: pathlib.Path, curves: dict, steps: list[int]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for c, label in CURVE_RUNS.items():
    if not curves.get(c):
      continue
    accs = [Stat(pt["test_accuracy"] for cur in curves[c] for pt in cur if pt["step"] == s)
            for s in steps]
    secs = [Stat(pt["train_s"] for cur in curves[c] for pt in cur if pt["step"] == s).mean
            for s in steps]
    for ax, xs in zip(axes, (steps, secs)):
      ax.errorbar(xs, [100 * a.mean for a in accs], yerr=[100 * a.ci95 for a in accs],
                  fmt="o-", capsize=3, label=label)
  for ax, xlabel in zip(axes, ("training episodes", "training seconds (this CPU, one core)")):
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy % (95% CI over seeds)")
    ax.grid(alpha=0.3)
  axes[0].set_xticks(steps, [f"{s:,}" for s in steps])
  axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[0].set_title("accuracy vs training budget", fontsize=10)
  axes[1].set_title("accuracy vs wall-clock", fontsize=10)
  axes[0].legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  plt.close(fig)


SINE_METHODS = ("turtle", "maml", "fomaml", "meta_lstm", "meta_sgd", "imaml")


def _sine_row(label: str, results: list[dict]) -> list:
  """Mean ± std over the seeds that finished (which diverged, and when, beside it)
  and the median over all seeds, a diverged one counted as infinitely bad."""
  diverged = sorted(x["diverged_at"] for x in results if x.get("diverged_at"))
  stat = Stat(x["test_mse"] for x in results if not x.get("diverged_at"))
  cell = stat.pm(1, 3) if stat.n else "-"
  if diverged:
    cell += (f" ({len(diverged)} of {len(results)} diverged, at step"
             f"{'s' * (len(diverged) > 1)} {', '.join(map(str, diverged))})")
  median = (statistics.median(math.inf if x.get("diverged_at") else x["test_mse"]
                              for x in results) if results else None)
  median = "-" if median is None else "diverged" if math.isinf(median) else f"{median:.3f}"
  return [label, cell, median, len(results)]


def sine(records: list[dict]) -> str:
  runs = under(records, "sine")
  rows = [_sine_row(m, [r["results"][m] for r in runs if m in r["results"]])
          for m in SINE_METHODS if m != "imaml"]
  # iMAML's rows come from its own runs (sine_imaml/<setting>/seed<s>), one row per
  # inner-solver setting: the all-method runs' iMAML used an earlier default.
  imaml_runs = under(records, "sine_imaml")
  imaml = {}
  for r in imaml_runs:
    f = r["flags"]
    # Runs from before --imaml_solver used proximal SGD.
    solver = f.get("imaml_solver", "sgd")
    setting = (solver, f["imaml_lr"] if solver == "sgd" else None, f["imaml_steps"],
               f.get("imaml_damping", 0.0))
    imaml.setdefault(setting, []).append(r)
  # L-BFGS first, then SGD by decreasing step.
  order = lambda kv: (kv[0][0] == "sgd", -(kv[0][1] or 0.0))
  for (solver, lr, steps, damping), rs in sorted(imaml.items(), key=order):
    unsolved = Stat(r["results"]["imaml"].get("unsolved_tasks", math.nan) for r in rs)
    how = f"L-BFGS x {steps}" if solver == "lbfgs" else f"inner step {lr:g} x {steps}"
    label = (f"imaml ({how}" + (f", damping {damping:g}" if damping else "")
             # (rounded: a float32 mean of zeros can log as 2e-8)
             + (f"; {round(100 * unsolved.mean, 3):.2g}% of training tasks unsolved)"
                if math.isfinite(unsolved.mean) else ")"))
    rows.append(_sine_row(label, [r["results"]["imaml"] for r in rs]))
  flags = runs[0]["flags"] if runs else {}
  reg = {r["flags"]["imaml_reg"] for r in imaml_runs}
  cg = {r["flags"]["imaml_cg_steps"] for r in imaml_runs}
  # Fig. 3.3 plots the median over runs (30 there), so the table shows it beside the mean.
  return (table(["method", "test MSE (mean ± std over the seeds that finished)",
                 "median over seeds (diverged = worst)", "seeds"], rows)
          + f"\n\n5-shot sine regression, 1-40-40-1 MLP, T = {flags.get('inner_steps')} inner "
          f"step(s) (iMAML: the proximal problem solved as its rows say, λ = {'/'.join(map(str, sorted(reg)))}, "
          f"{'/'.join(map(str, sorted(cg)))} CG iterations), meta-batch "
          f"{flags.get('meta_batch')}, {flags.get('steps')} meta-steps, "
          f"{flags.get('test_tasks')} test tasks per seed. Paper (Fig. 3.3, median of 30 runs): "
          f"TURTLE < MAML < meta-learner LSTM. {wall(runs)} per seed for all six methods "
          f"({wall(imaml_runs)} per iMAML run), {device(runs)}. "
          f"Commands (iMAML's result in the first is superseded by its own rows):\n\n"
          + commands(runs + [_with_solver(r) for r in imaml_runs]))


def _with_solver(record: dict) -> dict:
  """An iMAML run from before ``--imaml_solver`` (default now ``lbfgs``) used
  SGD: its command, to reproduce it today, says so."""
  if "imaml_solver" in record["flags"]:
    return record
  return {**record, "command": record.get("command", "") + " --imaml_solver sgd"}


def unrolled(records: list[dict]) -> str:
  parts = []
  influence = {k: under(records, f"unrolled/influence_K{k}") for k in (1, 10, 100)}
  rows = []
  optimum = None
  for k, runs in influence.items():
    for r in runs[:1]:
      optimum = r.get("optimal_theta", optimum)
    methods = sorted({m for r in runs for m in r["results"]})
    for m in methods:
      res = [r["results"][m] for r in runs if m in r["results"]]
      rows.append([m, k, Stat(x["final_theta"][0] for x in res).pm(1, 4),
                   Stat(x["full_horizon_loss"] for x in res).pm(1, 3), len(res)])
  if rows:
    parts.append("**Influence balancing** (optimal θ = "
                 f"{optimum:.4f}; 1,000 particles, σ = 0.1, SGD 1e-4, 3,000 meta-steps)\n\n"
                 + table(["method", "K", "final θ (mean ± std)", "loss of a 500-step unroll",
                          "seeds"], rows))
  runs = under(records, "unrolled/lr_schedule")
  if runs:
    methods = sorted({m for r in runs for m in r["results"]})
    rows = []
    for m in methods:
      res = [r["results"][m] for r in runs if m in r["results"]]
      rows.append([m, Stat(x["final_theta"][0] for x in res).pm(1, 2),
                   Stat(x["final_theta"][1] for x in res).pm(1, 2),
                   Stat(x["full_horizon_loss"] for x in res).pm(1, 3),
                   f"{Stat(x['wall_time_s'] for x in res).mean:.0f} s"])
    f = runs[0]["flags"]
    parts.append(f"**Learned learning-rate schedule** (SGD on a 1-32-32-1 MLP, sine regression, "
                 f"T = {f['inner_steps']} steps, windows of K = {f['window']}, "
                 f"{f['particles']} particles, σ = {f['sigma']}, Adam {f['meta_lr']}, "
                 f"{f['steps']} meta-steps; θ = log learning rates at the start and end)\n\n"
                 + table(["method", "θ0 (log lr at t = 0)", "θ1 (log lr at t = T)",
                          "full-horizon meta-loss", "wall time"], rows))
  everything = [r for rs in influence.values() for r in rs] + runs
  return ("\n\n".join(parts) + f"\n\n{device(everything)}. Commands:\n\n"
          + commands(everything)) if parts else "*(no runs)*"


RESIDUAL_HEADER = "inner gradient left after adaptation (× initial)"


def residual_cell(results: list[dict]) -> str:
  """|grad inner objective| after / before adaptation (median over test tasks)."""
  values = [x["inner_residual"] for x in results if "inner_residual" in x]
  return Stat(values).pm(1, 2) if values else "-"


SPECTRUM_HEADER = "λ_min(H_S) at θ*, median over tasks (initial → final meta-params)"
INDEFINITE_HEADER = "tasks with H_S + (λ + damping) I indefinite (final)"


def spectrum_cells(results: list[dict], solves: bool) -> list[str]:
  """The support Hessian's lowest eigenvalue at the adapted parameters and, for
  a method that ``solves`` a CG system (iMAML), how often it is indefinite
  (runs that measured it)."""
  measured = [x["support_hessian"] for x in results if "support_hessian" in x]
  if not measured:
    return ["-", "-"]
  median = lambda when: Stat(statistics.median(m[when]["min_eigenvalue"]) for m in measured)
  low = f"{median('initial').pm(1, 2)} → {median('final').pm(1, 2)}"
  if not solves:
    return [low, "-"]
  indefinite = Stat(m["final"]["fraction_indefinite"] for m in measured).pm(100, 0)
  return [low, f"{indefinite}% (below {measured[0]['final']['indefinite_below']:g})"]


def imaml(records: list[dict]) -> str:
  def row(label, res):
    return [label, Stat(x["test_accuracy"] for x in res).pm(100), residual_cell(res),
            *spectrum_cells(res, solves=label.startswith("imaml")),
            f"{Stat(x['meta_gradient_temp_bytes'] for x in res).mean / 2**20:.1f}",
            f"{Stat(x['meta_gradient_time_s'] for x in res).mean * 1e3:.0f}", len(res)]

  runs = under(records, "imaml")
  # MAML rows by how reverse mode differentiates the inner loop (--mixed_mode).
  rows = [row(m + (", mixed mode" if mixed else ""), res) for m in ("maml", "fomaml")
          for mixed in (False, True)
          if (res := [r["results"][m] for r in runs if m in r["results"]
                      and r["flags"].get("mixed_mode", False) == mixed])]
  # iMAML grouped by CG damping (runs before the flag existed had none).
  imaml_runs = [r for r in runs if "imaml" in r["results"]]
  for damping in sorted({r["flags"].get("damping", 0.0) for r in imaml_runs}):
    res = [r["results"]["imaml"] for r in imaml_runs if r["flags"].get("damping", 0.0) == damping]
    rows.append(row(f"imaml, damping {damping:g}", res))
  if not rows:
    return "*(no runs)*"
  f = runs[0]["flags"]
  # iMAML at other inner-loop settings (shorter runs), labelled with them.
  other = sorted(under(records, "imaml_sweep"), key=lambda r: -r["flags"]["inner_lr"])
  for r in other:
    g = r["flags"]
    rows.append(row(f"imaml, {g['inner_steps']} steps of {g['inner_lr']:g}, λ = {g['reg']:g} "
                    f"({g['steps']} meta-steps, {g['test_tasks']} test tasks)",
                    [r["results"]["imaml"]]))
  runs = runs + other
  # Runs from before --damping existed ran undamped; the example's default is
  # now 2.5, so the command that reproduces them says --damping 0.
  runs = [dict(r, command=r["command"] + " --damping 0")
          if "imaml" in r["results"] and "damping" not in r["flags"] else r for r in runs]
  spectral = [(r["flags"], next(iter(r["results"].values()))) for r in runs]
  spectral = [(flags, res) for flags, res in spectral if "support_hessian" in res]
  counts = sorted({flags["spectrum_tasks"] for flags, _ in spectral})
  # Runs from before the count was stored used hessian_extreme_eigenvalues' default, 80.
  lanczos = sorted({res.get("lanczos_iterations", 80) for _, res in spectral})
  eigen_note = (f" Eigenvalues: {'/'.join(map(str, lanczos))} Lanczos steps on the support-loss "
                f"Hessian at each of {'/'.join(map(str, counts))} test episodes' adapted "
                f"parameters." if counts else "")
  return (table(["method", "test accuracy % (mean ± std)", RESIDUAL_HEADER, SPECTRUM_HEADER,
                 INDEFINITE_HEADER, "meta-gradient temp MiB", "meta-gradient ms", "seeds"], rows)
          + f"\n\nOmniglot {f['way']}-way {f['shot']}-shot, {conv_net(f)} with {f['channels']} "
          f"channels, "
          f"{f['inner_steps']} inner SGD steps (lr {f['inner_lr']}) for all three; iMAML λ = "
          f"{f['reg']}, {f['cg_steps']} CG iterations on H_S + (λ + damping) I; meta-batch "
          f"{f['meta_batch']}, Adam {f['meta_lr']}, {f['steps']} meta-steps, {f['test_tasks']} "
          f"test tasks.{eigen_note} Memory and "
          f"time are one meta-gradient of the meta-batch (XLA's compiled temporaries; median of "
          f"3 calls). {device(runs)}. Commands:\n\n" + commands(runs))


def scales(records: list[dict]) -> str:
  runs = under(records, "showdown")
  if not runs:
    return "*(no runs)*"
  res = runs[0]["results"]
  objectives = list(res)
  names = list(res[objectives[0]])
  rows = [[n] + [f"{res[o][n]['norm_ratio']:.3g} (cos {res[o][n]['cosine']:.3f})"
                 for o in objectives] for n in names]
  return (table(["estimator"] + [f"{o}: |g| / |∇L| (cosine)" for o in objectives], rows)
          + f"\n\nes and es_wsr at σ = 1e-3 with P = {runs[0]['flags']['population']}, "
          "forward_gradient with 64 directions, the rest exact. Command: "
          f"`{runs[0]['command']}`.")


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


REPORTS: dict[str, Callable[[list[dict]], str]] = {
    "kronecker_t1": kronecker_t1,
    "kronecker_t1_sweep": kronecker_t1_sweep,
    "kronecker_t2": kronecker_t2,
    "rotation": rotation,
    "evograd_toy": evograd_toy,
    "es_protonet": es_protonet,
    "es_protonet_curve": es_protonet_curve,
    "sine": sine,
    "unrolled": unrolled,
    "imaml": imaml,
    "scales": scales,
    "benchmarks": benchmarks,
    "optax_inner_loop": lambda records: _example_report("optax_inner_loop", records),
}


def _example_report(name: str, records: list[dict]) -> str:
  """The table of an example that owns its report (``examples.<name>.report``),
  given its runs (those under ``<name>/``)."""
  import importlib
  return importlib.import_module(f"examples.{name}").report(under(records, name))


def render(records: list[dict], names: Iterable[str] | None = None,
           plots: pathlib.Path | None = None) -> dict[str, str]:
  out = {}
  for name in names or REPORTS:
    try:
      out[name] = (REPORTS[name](records, plots) if name in ("es_protonet", "es_protonet_curve")
                   else REPORTS[name](records))
    except (KeyError, ValueError, IndexError, TypeError, statistics.StatisticsError) as err:
      out[name] = f"*(report {name}: incomplete results: {err!r})*"
  return out


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
  parser.add_argument("--only", nargs="+", choices=sorted(REPORTS), default=None)
  parser.add_argument("--readme", type=pathlib.Path, default=None,
                      help="rewrite this file's <!-- report:NAME --> blocks")
  args = parser.parse_args(argv)
  if not args.runs.is_dir():
    raise SystemExit(f"error: {args.runs} is not a directory")
  records = load(args.runs)
  blocks = render(records, args.only, plots=args.runs)
  if args.readme:
    done = rewrite_readme(args.readme, blocks)
    print(f"rewrote {len(done)} block(s) of {args.readme}: {', '.join(done) or 'none found'}")
  else:
    for name, body in blocks.items():
      print(f"## {name}\n\n{body}\n")


if __name__ == "__main__":
  main()
