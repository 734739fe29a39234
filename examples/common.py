"""What every example shares: flags, the training loop (compiled chunks of steps,
progress with ETA, JSON-lines metrics, learning-curve PNG, checkpoints with exact
and checked resume, divergence stop), provenance-stamped ``results.json``,
confidence intervals and the Omniglot data directory rule."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
# The prepared offline Omniglot copy that sits beside a checkout of this project.
SHARED_TFDS = REPO.parent / "shared" / "data" / "tfds"
# Flags that may differ between a run and its --resume: where it writes, how
# often it logs or saves, and how long it runs. Anything else changes the
# trajectory, so resuming with a different value is refused.
RESUMABLE_FLAGS = ("steps", "out", "run_root", "resume", "overwrite", "log_every",
                   "checkpoint_every", "data_dir")
# The files a run writes into its --out; a directory holding any of them holds a run.
RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "results.json", "run_config.json",
             "learning_curve.png")


def run_args(args: argparse.Namespace, run: str) -> argparse.Namespace:
  """``args`` for one run of a multi-run example, written under ``--out/run``.

  With ``--resume``, a run that had not started when the example was killed
  starts afresh (the others resume); ``--resume`` with no checkpoint in any run
  is still an error.
  """
  # The runs' resumed wall times are collected in one list that the copies
  # share with ``args`` (a shallow copy), so write_results(args) sees them all.
  args.__dict__.setdefault("_prior_walls", [])
  out = copy.copy(args)
  out.out = str(pathlib.Path(args.out) / run)
  out.run_root = args.out
  return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
  """``--help`` shows each flag's default and keeps the docstring's layout."""


def base_parser(description: str, *, out: str, steps: int | None = None,
                omniglot: bool = False, steps_help: str | None = None) -> argparse.ArgumentParser:
  """Flags every example has; the training flags only if it trains (``steps``,
  or ``steps_help`` for an example whose default depends on other flags:
  ``--steps`` then defaults to None)."""
  parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
  parser.add_argument("--seed", type=int, default=0, help="seed of everything random")
  parser.add_argument("--out", type=str, default=out, help="output directory")
  parser.add_argument("--smoke", action="store_true",
                      help="a few steps on tiny settings (what the tests run)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a previous run in --out (without it, an --out that holds "
                           "a run is refused unless --resume continues it)")
  if steps is not None or steps_help is not None:
    parser.add_argument("--steps", type=int, default=steps, help=steps_help or "training steps")
    parser.add_argument("--log_every", type=int, default=50,
                        help="steps between progress lines / metrics.jsonl rows")
    parser.add_argument("--checkpoint_every", type=int, default=200,
                        help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --out (same flags required)")
  if omniglot:
    parser.add_argument("--data_dir", type=str, default=None,
                        help="prepared TFDS directory holding omniglot/3.0.0; default: "
                             "$TFDS_DATA_DIR, else ../shared/data/tfds beside this "
                             "checkout, else ~/tensorflow_datasets")
  return parser


DISTRIBUTED_FLAGS = ("coordinator", "num_processes", "process_id", "distributed")


def add_conv_flags(parser: argparse.ArgumentParser) -> None:
  """The conv4 network's width and depth (``models.conv4``). Smoke runs use one
  block: a 4-block second-order program compiles ~4x slower on CPU."""
  parser.add_argument("--channels", type=int, default=16, help="channels of every conv block")
  parser.add_argument("--num_blocks", type=int, choices=(1, 2, 3, 4), default=4,
                      help="conv blocks (the papers' conv4: 4)")


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
  """Flags of JAX's multi-controller runtime (one process per host/GPU group)."""
  group = parser.add_argument_group("multi-process (jax.distributed)")
  group.add_argument("--coordinator", type=str, default=None,
                     help="host:port of process 0; with --num_processes and --process_id")
  group.add_argument("--num_processes", type=int, default=None)
  group.add_argument("--process_id", type=int, default=None)
  group.add_argument("--distributed", action="store_true",
                     help="jax.distributed.initialize() with cluster auto-detection "
                          "(SLURM, Open MPI, TPU pods, ...)")


def initialize_distributed(args: argparse.Namespace) -> None:
  """Starts JAX's multi-controller runtime if asked; a no-op otherwise.

  On CPU the cross-process collectives use gloo. Every process then sees all
  devices of all processes (``jax.devices()``) and runs the same program.
  """
  explicit = [args.coordinator, args.num_processes, args.process_id]
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    raise SystemExit("error: --coordinator, --num_processes and --process_id go together")
  if not args.distributed and args.coordinator is None:
    return
  if args.num_processes is not None and not 0 <= args.process_id < args.num_processes:
    raise SystemExit(f"error: --process_id must be in 0..{args.num_processes - 1}")
  if jax.config.jax_platforms in (None, "", "cpu") or jax.config.jax_platforms.startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args.coordinator is None:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)


def check_out(args: argparse.Namespace) -> None:
  """Refuses to write over a previous run: an ``--out`` holding a run's files
  needs ``--resume`` (continue it) or ``--overwrite`` (its files are deleted)."""
  out = pathlib.Path(args.out)
  # Process 0 decides (it alone writes), and every process of a multi-process
  # run learns its decision, so they all stop together instead of one waiting
  # for the others in a collective.
  found = [name for name in RUN_FILES if (out / name).exists()] if is_main_process() else []
  if getattr(args, "resume", False):
    return
  refuse = bool(found) and not getattr(args, "overwrite", False)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    refuse = bool(multihost_utils.broadcast_one_to_all(np.asarray(refuse)))
  if refuse:
    held = ", ".join(found) or "see process 0"
    raise SystemExit(f"error: --out {out} already holds a run ({held}); pass --resume to "
                     f"continue it, --overwrite to replace it, or another --out")
  for name in found:
    (out / name).unlink()


def data_dir(args: argparse.Namespace) -> str:
  """The Omniglot TFDS directory: ``--data_dir``, then ``$TFDS_DATA_DIR``, then
  ``../shared/data/tfds`` beside this checkout, then ``~/tensorflow_datasets``."""
  if getattr(args, "data_dir", None):
    return args.data_dir
  if os.environ.get("TFDS_DATA_DIR"):
    return os.environ["TFDS_DATA_DIR"]
  if SHARED_TFDS.is_dir():
    return str(SHARED_TFDS)
  return os.path.expanduser("~/tensorflow_datasets")


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


def nonnegative_flags(args: argparse.Namespace, *names: str) -> None:
  for name in names:
    value = getattr(args, name)
    if value is None or value < 0:
      raise SystemExit(f"error: --{name} must be >= 0, got {value}")


def is_main_process() -> bool:
  """Only process 0 of a multi-process run prints and writes files."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """NumPy copies of (possibly multi-process, replicated) arrays."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree_util.tree_map(one, tree)


def say(*parts: Any) -> None:
  if is_main_process():
    print(*parts, flush=True)


class Checkpointer:
  """Saves ``(step, state)``; restores into a state of the same structure.

  Leaves go to one ``.npz`` written atomically (temp file + rename), so a run
  killed mid-save leaves the previous checkpoint intact.
  """

  def __init__(self, out_dir: pathlib.Path):
    self.path = out_dir / "checkpoint.npz"

  def save(self, step: int, state: Any, wall_s: float = 0.0) -> None:
    """``wall_s``: the run's wall time so far, all resumed segments included."""
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(to_host(state))]
    if not is_main_process():
      return
    tmp = self.path.with_suffix(".tmp.npz")
    np.savez(tmp, step=np.asarray(step), wall_s=np.asarray(wall_s),
             **{f"leaf{i}": x for i, x in enumerate(leaves)})
    os.replace(tmp, self.path)

  def wall_time(self) -> float:
    """The wall time stored with the checkpoint (0 for one written before it was stored)."""
    with np.load(self.path) as data:
      return float(data["wall_s"]) if "wall_s" in data.files else 0.0

  def restore(self, like: Any) -> tuple[int, Any]:
    leaves, treedef = jax.tree_util.tree_flatten(like)
    with np.load(self.path) as data:
      stored = sorted(k for k in data.files if k.startswith("leaf"))
      if len(stored) != len(leaves):
        raise SystemExit(f"error: checkpoint {self.path} holds {len(stored)} arrays, this run "
                         f"has {len(leaves)}: it was written by a different model or method")
      restored = []
      for i, leaf in enumerate(leaves):
        value = data[f"leaf{i}"]
        if value.shape != np.shape(leaf):
          raise SystemExit(f"error: checkpoint {self.path} array {i} has shape {value.shape}, "
                           f"this run expects {np.shape(leaf)}: different model settings")
        restored.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
      return int(data["step"]), jax.tree_util.tree_unflatten(treedef, restored)

  def exists(self) -> bool:
    return self.path.exists()


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class MetricsLog:
  """JSON lines in ``metrics.jsonl`` and a progress line (step/total, rate, ETA)."""

  def __init__(self, out_dir: pathlib.Path, *, total: int, name: str):
    self.path = out_dir / "metrics.jsonl"
    self.total, self.name = total, name
    self.t0 = self.last_step = None

  def start(self, step: int, resume: bool) -> None:
    """Fresh runs start an empty log; a resumed one keeps rows up to ``step``
    (rows a killed run wrote after its last checkpoint are logged again)."""
    if is_main_process():
      kept = [r for r in self.read() if r["step"] <= step] if resume else []
      self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    self.t0, self.last_step = time.perf_counter(), step

  def write(self, step: int, **metrics) -> None:
    metrics = {k: float(v) for k, v in metrics.items()}
    now = time.perf_counter()
    rate = (step - self.last_step) / max(now - self.t0, 1e-9)
    self.t0, self.last_step = now, step
    if not is_main_process():
      return
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    eta = _duration((self.total - step) / rate) if rate > 0 else "?"
    values = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    print(f"[{self.name}] step {step}/{self.total} ({100 * step / self.total:.0f}%)  {values}"
          f"  | {rate:.3g} steps/s, ETA {eta}", flush=True)

  def read(self) -> list[dict]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def curve(rows: Sequence[dict], metric: str) -> list[list[float]]:
  """``[[step, value], ...]`` of one metric from ``metrics.jsonl`` rows."""
  return [[r["step"], r[metric]] for r in rows if metric in r]


def plot_curves(records: list[dict], png: pathlib.Path, title: str) -> None:
  if not is_main_process() or not records:
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = sorted({k for r in records for k in r if k not in ("step", "train_s")})
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


class TrainResult(NamedTuple):
  state: Any
  steps: int                 # steps taken (== --steps unless it diverged)
  diverged_at: int | None    # first logged step whose mean metrics were not finite
  log: list[dict]            # the rows of metrics.jsonl (window means), resumed ones included
  prior_wall_s: float = 0.0  # wall time of the earlier segments of a resumed run (checkpointed)


def _chunk_runner(step_fn: Callable, seed: int) -> Callable:
  """``(state, start, n, *data) -> (state, summed metrics of the n steps)``.

  One compiled program for every ``n`` (a ``fori_loop`` with a traced trip
  count), so how a run is cut into chunks -- by logging, checkpoints or a
  resume -- never changes its arithmetic: resumed runs are bit-identical.
  Step ``i`` always gets the key ``fold_in(PRNGKey(seed), i)``.
  """
  base = jax.random.PRNGKey(seed)

  @jax.jit
  def run(state, start, n, *data):
    shapes = jax.eval_shape(lambda s: step_fn(s, base, *data)[1], state)
    zeros = jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, jnp.float32), shapes)

    def body(i, carry):
      s, sums = carry
      s, metrics = step_fn(s, jax.random.fold_in(base, start + i), *data)
      return s, jax.tree_util.tree_map(lambda a, m: a + jnp.asarray(m, jnp.float32), sums, metrics)

    return jax.lax.fori_loop(0, n, body, (state, zeros))

  return run


def _check_resume_flags(args, out: pathlib.Path, may_change: Sequence[str],
                        resume: bool) -> None:
  path = out / "run_config.json"
  flags = {k: v for k, v in vars(args).items()
           if k not in (*RESUMABLE_FLAGS, *may_change) and not k.startswith("_")}
  flags = json.loads(json.dumps(flags, default=str))
  if not resume:
    if is_main_process():
      path.write_text(json.dumps(flags, indent=1, sort_keys=True))
    return
  if not path.exists():
    raise SystemExit(f"error: --resume: {out} has a checkpoint but no run_config.json, so its "
                     f"flags cannot be checked; start afresh without --resume")
  saved = json.loads(path.read_text())
  differ = sorted(k for k in set(flags) | set(saved) if flags.get(k) != saved.get(k))
  if differ:
    detail = ", ".join(f"--{k} {saved.get(k)!r} -> {flags.get(k)!r}" for k in differ)
    raise SystemExit(f"error: --resume with flags that differ from the checkpointed run in "
                     f"{out}: {detail}. Resume with the original flags (only "
                     f"{', '.join('--' + f for f in (*RESUMABLE_FLAGS, *may_change) if f not in ('out', 'resume'))} "
                     f"may change), or use another --out.")


def train(args, *, state: Any, step_fn: Callable, name: str, data: Sequence[Any] = (),
          metric_every: Callable[[Any, int], dict] | None = None,
          resume_may_change: Sequence[str] = (), stop_on_divergence: bool = True,
          place: Callable[[Any], Any] | None = None) -> TrainResult:
  """The shared loop: ``step_fn(state, key, *data) -> (state, metrics)`` (pure,
  jittable; ``data`` are arrays passed as arguments, never closed over, so XLA
  does not embed datasets in the program).

  Steps run in compiled chunks up to the next log or checkpoint step; a
  progress line and a ``metrics.jsonl`` row (metrics averaged over the steps
  since the last row, plus ``metric_every(state, step)``) every
  ``--log_every`` steps; a checkpoint every ``--checkpoint_every`` steps and at
  the end. ``--resume`` continues from the checkpoint with the same flags
  (checked; ``RESUMABLE_FLAGS`` and ``resume_may_change`` may differ) and
  drops log rows after it. A non-finite logged metric stops the run
  (``diverged_at``) unless ``stop_on_divergence=False``. ``place`` puts the
  initial or restored state where the step expects it (e.g. replicated over a
  multi-process mesh).
  """
  segment_start = time.perf_counter()
  check_out(args)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  ckpt = Checkpointer(out)
  log = MetricsLog(out, total=args.steps, name=name)
  resume = args.resume
  if resume and not ckpt.exists():
    root = getattr(args, "run_root", None)
    if root is not None and any(pathlib.Path(root).glob("*/checkpoint.npz")):
      # One run of a multi-run example that had not started when the example was killed.
      say(f"[{name}] no checkpoint yet in {out}; starting this run afresh")
      resume = False
    else:
      raise SystemExit(f"error: --resume: no checkpoint in {out}; run without --resume to "
                       f"start afresh")
  _check_resume_flags(args, out, resume_may_change, resume)
  start, prior_wall_s = 0, 0.0
  if resume:
    start, state = ckpt.restore(state)
    prior_wall_s = ckpt.wall_time()
    if start > args.steps:
      raise SystemExit(f"error: --resume: the checkpoint is at step {start}, beyond --steps "
                       f"{args.steps}")
    say(f"[{name}] resumed from step {start} ({ckpt.path})")
  args.__dict__.setdefault("_prior_walls", []).append(prior_wall_s)   # for write_results
  log.start(start, resume)
  # train_s: seconds spent in training steps so far (compiles included,
  # metric_every's evaluations not), carried over a resume by the log rows.
  train_s = ([0.0] + [r["train_s"] for r in log.read() if "train_s" in r])[-1] if resume else 0.0
  if place is not None:
    state = place(state)
  run = _chunk_runner(step_fn, args.seed)
  step, diverged_at = start, None
  window_sums, window_steps = None, 0     # metrics since the last log row
  while step < args.steps:
    boundary = min(args.steps, (step // args.log_every + 1) * args.log_every,
                   (step // args.checkpoint_every + 1) * args.checkpoint_every)
    chunk_start = time.perf_counter()
    state, sums = run(state, step, boundary - step, *data)
    sums = to_host(sums)
    train_s += time.perf_counter() - chunk_start
    window_sums = sums if window_sums is None else jax.tree_util.tree_map(
        np.add, window_sums, sums)
    window_steps += boundary - step
    step = boundary
    if step % args.log_every == 0 or step == args.steps:
      means = jax.tree_util.tree_map(lambda x: x / window_steps, window_sums)
      window_sums, window_steps = None, 0
      row = {**means, **(metric_every(state, step) if metric_every else {})}
      log.write(step, **row, train_s=train_s)
      if stop_on_divergence and not all(np.isfinite(float(v)) for v in row.values()):
        diverged_at = step
        say(f"[{name}] diverged: non-finite metrics at step {step}; stopping")
        break
    if step % args.checkpoint_every == 0 or step == args.steps:
      ckpt.save(step, state, wall_s=prior_wall_s + time.perf_counter() - segment_start)
  rows = log.read()
  plot_curves(rows, out / "learning_curve.png", name)
  return TrainResult(state, step, diverged_at, rows, prior_wall_s)


def mean_ci95(values) -> tuple[float, float]:
  """Mean and half-width of the normal 95% confidence interval."""
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


def _git(*cmd: str) -> str | None:
  try:
    return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def provenance(module: str, argv: Sequence[str] | None) -> dict:
  """Where and with what a result was produced (``argv``: the example's flags)."""
  device = jax.devices()[0]
  argv = sys.argv[1:] if argv is None else list(argv)
  return {
      "git_commit": _git("rev-parse", "HEAD"),
      "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
      "command": shlex.join(["python", "-m", module, *argv]),
      "device": {"platform": device.platform, "kind": device.device_kind,
                 "count": jax.device_count(), "processes": jax.process_count()},
      "host": {"machine": platform.machine(), "processor": platform.processor(),
               "cpus": os.cpu_count()},
      "jax": jax.__version__,
  }


# The results.json layout (examples/reporting.py reads it; migrate older files
# with python -m examples.migrate_results).
RESULTS_SCHEMA = 2


def write_results(args, results: dict, *, started: float, module: str,
                  argv: Sequence[str] | None) -> pathlib.Path:
  """``results.json``: flags, seed, provenance, wall time and the example's results.

  ``results`` holds the example's final metrics (``"results"``: label -> metrics,
  one label per table row or method, plus any other fields); ``started`` is the
  ``time.time()`` this process began, ``module``/``argv`` its command line.
  ``wall_time_s`` is the total over every resume: this process's time plus
  the earlier segments of every run :func:`train` resumed for ``args`` (or
  for its :func:`run_args` copies); ``wall_time_segment_s`` is this process
  alone.
  ``python -m examples.report`` aggregates these files over seeds.
  """
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / "results.json"
  flags = {k: v for k, v in vars(args).items() if not k.startswith("_")}
  prior_wall_s = sum(getattr(args, "_prior_walls", ()))
  record = {"schema": RESULTS_SCHEMA, "flags": json.loads(json.dumps(flags, default=str)),
            "seed": args.seed,
            **provenance(module, argv), "wall_time_s": prior_wall_s + time.time() - started,
            "wall_time_segment_s": time.time() - started, **results}
  if is_main_process():
    path.write_text(json.dumps(record, indent=2, default=float))
  return path
