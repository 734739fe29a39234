"""What every example shares: flags, progress log, JSON-lines metrics, learning-curve
PNG, checkpoints with exact resume, confidence intervals and device sharding."""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def base_parser(description: str, *, steps: int, out: str) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--steps", type=int, default=steps, help="training steps")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=str, default=out, help="output directory")
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--checkpoint_every", type=int, default=200)
  parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
  parser.add_argument("--smoke", action="store_true", help="a few steps on tiny settings (CI)")
  return parser


def apply_smoke(args: argparse.Namespace, argv, **values) -> None:
  """With ``--smoke``, shrink settings to ``values`` except flags given explicitly."""
  if not args.smoke:
    return
  given = {a.split("=")[0].lstrip("-") for a in (sys.argv[1:] if argv is None else argv)
           if a.startswith("--")}
  for name, value in values.items():
    if name not in given:
      setattr(args, name, value)


def positive_flags(args: argparse.Namespace, *names: str) -> None:
  for name in names:
    value = getattr(args, name)
    if value is None or value <= 0:
      raise SystemExit(f"error: --{name} must be positive, got {value}")


class Checkpointer:
  """Saves ``(step, state)``; restores into a state of the same structure.

  Leaves go to one ``.npz`` written atomically (temp file + rename), so a run
  killed mid-save leaves the previous checkpoint intact.
  """

  def __init__(self, out_dir: pathlib.Path):
    self.path = out_dir / "checkpoint.npz"

  def save(self, step: int, state: Any) -> None:
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    tmp = self.path.with_suffix(".tmp.npz")
    np.savez(tmp, step=np.asarray(step), **{f"leaf{i}": x for i, x in enumerate(leaves)})
    os.replace(tmp, self.path)

  def restore(self, like: Any) -> tuple[int, Any]:
    with np.load(self.path) as data:
      leaves, treedef = jax.tree_util.tree_flatten(like)
      restored = [jnp.asarray(data[f"leaf{i}"], dtype=jnp.asarray(l).dtype)
                  for i, l in enumerate(leaves)]
      return int(data["step"]), jax.tree_util.tree_unflatten(treedef, restored)

  def exists(self) -> bool:
    return self.path.exists()


class MetricsLog:
  """One-line progress to stdout and JSON lines to ``metrics.jsonl``."""

  def __init__(self, out_dir: pathlib.Path, resume: bool):
    self.path = out_dir / "metrics.jsonl"
    if not resume and self.path.exists():
      self.path.unlink()
    self.t0, self.last_step = time.perf_counter(), None

  def write(self, step: int, **metrics) -> None:
    now = time.perf_counter()
    rate = "" if self.last_step is None else \
        f"  {(step - self.last_step) / max(now - self.t0, 1e-9):.2f} steps/s"
    self.t0, self.last_step = now, step
    metrics = {k: float(v) for k, v in metrics.items()}
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    print(f"step {step:6d}  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + rate,
          flush=True)

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def plot_curves(records: list[dict], png: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = sorted({k for r in records for k in r if k != "step"})
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * max(len(keys), 1), 3), squeeze=False)
  for ax, key in zip(axes[0], keys):
    pts = [(r["step"], r[key]) for r in records if key in r]
    ax.plot([p[0] for p in pts], [p[1] for p in pts])
    ax.set_xlabel("step")
    ax.set_title(key)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  plt.close(fig)


def train(args, *, state: Any, step_fn: Callable, name: str,
          metric_every: Callable[[Any, int], dict] | None = None) -> Any:
  """The shared loop: resume, ``step_fn(state, key) -> (state, metrics)``,
  log every ``--log_every``, checkpoint every ``--checkpoint_every`` and at the end.

  The key of step ``i`` is ``fold_in(PRNGKey(seed), i)``, so a resumed run
  replays exactly the steps an uninterrupted one would have taken.
  """
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  ckpt, log = Checkpointer(out), MetricsLog(out, args.resume)
  start = 0
  if args.resume and ckpt.exists():
    start, state = ckpt.restore(state)
    print(f"resumed from step {start}", flush=True)
  base = jax.random.PRNGKey(args.seed)
  for i in range(start, args.steps):
    state, metrics = step_fn(state, jax.random.fold_in(base, i))
    done = i + 1
    if done % args.log_every == 0 or done == args.steps:
      extra = metric_every(state, done) if metric_every else {}
      log.write(done, **jax.device_get(metrics), **extra)
    if done % args.checkpoint_every == 0 or done == args.steps:
      ckpt.save(done, state)
  plot_curves(log.read(), out / "learning_curve.png", name)
  return state


def mean_ci95(values) -> tuple[float, float]:
  """Mean and half-width of the normal 95% confidence interval."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


def write_results(args, results: dict) -> None:
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  results = {"flags": vars(args), **results}
  (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
  print(json.dumps({k: v for k, v in results.items() if k != "flags"}, indent=2, default=float))


def replicate(tree: Any, n: int) -> Any:
  """Host-side copies with a leading device axis, for ``pmap`` to shard."""
  return jax.tree_util.tree_map(
      lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), jax.device_get(tree))


def replicate_on_devices(x: Any, devices) -> jax.Array:
  """One copy of ``x`` on each of ``devices``, laid out as ``pmap`` wants its
  mapped inputs (leading device axis), so a ``pmap`` call does not transfer it
  again. For large constants such as datasets; ``in_axes=None`` would copy
  them to every device on every call."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
  stacked = replicate(x, len(devices))  # a broadcast view, no host copy
  return jax.device_put(stacked, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices")))


def unreplicate(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda x: x[0], tree)
