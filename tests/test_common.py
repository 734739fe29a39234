"""The examples' shared training loop (examples/common.py)."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples import common


def _args(tmp_path, **kw):
  base = dict(seed=0, out=str(tmp_path), steps=12, log_every=4, checkpoint_every=6,
              resume=False, smoke=False)
  return argparse.Namespace(**{**base, **kw})


def _step(state, key):
  x = state + 0.1 * jax.random.normal(key, state.shape) - 0.05 * state
  return x, {"norm": jnp.linalg.norm(x)}


def test_chunking_never_changes_the_arithmetic(tmp_path):
  finals = []
  for log_every, ckpt in ((1, 12), (4, 6), (12, 5)):
    out = tmp_path / f"{log_every}_{ckpt}"
    r = common.train(_args(out, log_every=log_every, checkpoint_every=ckpt),
                     state=jnp.ones(5), step_fn=_step, name="t")
    finals.append(np.asarray(r.state))
    assert r.steps == 12 and r.diverged_at is None
  for f in finals[1:]:
    np.testing.assert_array_equal(f, finals[0])


def test_logged_metrics_are_window_means(tmp_path):
  step = lambda s, k: (s + 1.0, {"value": s})
  common.train(_args(tmp_path, steps=8, log_every=4), state=jnp.zeros(()), step_fn=step,
               name="t")
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["value"] for r in rows] == [1.5, 5.5]     # means of 0..3 and 4..7


def test_divergence_stops_the_run(tmp_path):
  step = lambda s, k: (s * 10.0, {"loss": s})
  r = common.train(_args(tmp_path, steps=200, log_every=10, checkpoint_every=50),
                   state=jnp.ones(()), step_fn=step, name="t")
  assert r.diverged_at == 40 and r.steps == 40     # 10^38 overflows float32 by step 40


def test_restoring_a_different_model_names_the_problem(tmp_path):
  common.train(_args(tmp_path), state=jnp.ones(5), step_fn=_step, name="t")
  with pytest.raises(SystemExit, match="shape"):
    common.Checkpointer(tmp_path).restore(jnp.ones(6))
  with pytest.raises(SystemExit, match="arrays"):
    common.Checkpointer(tmp_path).restore((jnp.ones(5), jnp.ones(5)))


def test_data_dir_rule(tmp_path, monkeypatch):
  args = argparse.Namespace(data_dir=str(tmp_path))
  assert common.data_dir(args) == str(tmp_path)
  monkeypatch.setenv("TFDS_DATA_DIR", "/from/env")
  assert common.data_dir(argparse.Namespace(data_dir=None)) == "/from/env"
  monkeypatch.delenv("TFDS_DATA_DIR")
  expected = str(common.SHARED_TFDS) if common.SHARED_TFDS.is_dir() else None
  if expected:
    assert common.data_dir(argparse.Namespace(data_dir=None)) == expected


def test_an_out_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
  common.train(_args(tmp_path), state=jnp.ones(5), step_fn=_step, name="t")
  with pytest.raises(SystemExit, match="already holds a run.*--resume.*--overwrite"):
    common.train(_args(tmp_path), state=jnp.ones(5), step_fn=_step, name="t")
  # --overwrite replaces the run: a fresh log, not the old rows plus new ones.
  common.train(_args(tmp_path, overwrite=True, steps=4), state=jnp.ones(5), step_fn=_step,
               name="t")
  rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(r)["step"] for r in rows] == [4]
  # Examples that do not train refuse the same way before doing any work.
  with pytest.raises(SystemExit, match="already holds a run"):
    common.check_out(argparse.Namespace(out=str(tmp_path)))


def test_wall_time_totals_every_resumed_segment(tmp_path, monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])

  run = common._chunk_runner

  def timed_runner(step_fn, seed):  # every chunk of steps "takes" 10 s of the fake clock
    inner = run(step_fn, seed)
    def call(*a):
      clock[0] += 10.0
      return inner(*a)
    return call

  monkeypatch.setattr(common, "_chunk_runner", timed_runner)
  first = common.train(_args(tmp_path, steps=6), state=jnp.ones(5), step_fn=_step, name="t")
  assert first.prior_wall_s == 0.0
  # 6 steps in chunks ending at 4 and 6: 20 s, stored with the checkpoint.
  np.testing.assert_allclose(common.Checkpointer(tmp_path).wall_time(), 20.0)
  second = common.train(_args(tmp_path, steps=12, resume=True), state=jnp.ones(5),
                        step_fn=_step, name="t")
  assert second.prior_wall_s == 20.0
  # train_s in the log continues across the resume: chunks end at 4, 6 | 8, 12.
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["train_s"]) for r in rows] == [(4, 10.0), (6, 20.0), (8, 30.0),
                                                       (12, 40.0)]
  resumed = _args(tmp_path, steps=12, resume=True)
  third = common.train(resumed, state=jnp.ones(5), step_fn=_step, name="t")   # nothing left
  assert third.prior_wall_s == 40.0
  # write_results adds the resumed segments train() saw for these args.
  path = common.write_results(resumed, {"results": {}}, started=common.time.time() - 5,
                              module="x", argv=[])
  record = json.loads(path.read_text())
  assert record["wall_time_s"] == pytest.approx(45.0, abs=1.0)
  assert "_prior_walls" not in record["flags"]
  assert record["wall_time_segment_s"] == pytest.approx(5.0, abs=1.0)
