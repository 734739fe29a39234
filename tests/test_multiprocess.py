"""JAX's multi-controller runtime: 2 local processes x 2 CPU devices (gloo).

The population is split over the 4 global devices of a one-axis mesh; the
gradient for a key must be the single-process one, and a (smoke) ES-ProtoNet
training run must log the same metrics as one process with 4 devices.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from metagrad import estimators

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600

WORKER = textwrap.dedent("""
    import json, os, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    import jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from metagrad import estimators
    mesh = jax.make_mesh((jax.device_count(),), ("d",))
    rep = NamedSharding(mesh, P())
    loss = lambda p: jnp.sum(jnp.sin(p["x"]) ** 2) + jnp.sum(p["x"] ** 4)
    params = jax.device_put({"x": np.linspace(-1, 1, 37).astype(np.float32)}, rep)
    key = jax.device_put(np.asarray(jax.random.PRNGKey(11)), rep)
    step = jax.jit(jax.shard_map(
        lambda p, k: estimators.es_wsr(loss, p, k, population=16, axis_name="d"),
        mesh=mesh, in_specs=(P(), P()), out_specs=P()))
    grad = np.asarray(step(params, key)["x"].addressable_data(0))
    print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                      "grad": grad.tolist()}))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _two_processes(argv_for) -> list[subprocess.CompletedProcess]:
  port = _free_port()
  procs = [subprocess.Popen(argv_for(f"localhost:{port}", i), cwd=REPO, env=_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    outs.append(out)
  return outs


def test_two_processes_give_the_single_process_gradient(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  outs = _two_processes(lambda addr, i: [sys.executable, str(script), addr, str(i)])
  results = [json.loads(o.strip().splitlines()[-1]) for o in outs]
  loss = lambda p: jnp.sum(jnp.sin(p["x"]) ** 2) + jnp.sum(p["x"] ** 4)
  single = estimators.es_wsr(loss, {"x": jnp.linspace(-1, 1, 37)}, jax.random.PRNGKey(11),
                             population=16)["x"]
  for r in results:
    assert r["devices"] == 4 and r["processes"] == 2
    np.testing.assert_allclose(r["grad"], single, rtol=1e-5, atol=1e-7)


def test_es_protonet_trains_the_same_on_two_processes(tmp_path, omniglot):
  flags = ["--smoke", "--image_size", "28", "--steps", "4", "--log_every", "1",
           "--checkpoint_every", "4", "--test_episodes", "8", "--val_episodes", "4"]
  module = [sys.executable, "-m", "examples.es_protonet"]
  multi = tmp_path / "multi"
  _two_processes(lambda addr, i: module + flags + [
      "--coordinator", addr, "--num_processes", "2", "--process_id", str(i), "--out", str(multi)])
  single = tmp_path / "single"
  subprocess.run(module + flags + ["--out", str(single)], cwd=REPO, env=_env(4), check=True,
                 capture_output=True, timeout=TIMEOUT)
  rows = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
  a, b = rows(multi), rows(single)
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
  for ra, rb in zip(a, b):
    assert set(ra) == set(rb)
    for k in set(ra) - {"train_s"}:        # train_s is a wall-clock time, not a result
      np.testing.assert_allclose(ra[k], rb[k], rtol=1e-4, atol=1e-5, err_msg=k)
  ra, rb = (json.loads((d / "results.json").read_text()) for d in (multi, single))
  assert ra["device"]["processes"] == 2 and rb["device"]["processes"] == 1
  assert ra["device"]["count"] == rb["device"]["count"] == 4
  np.testing.assert_allclose(ra["results"]["es_wsr"]["test_accuracy"],
                             rb["results"]["es_wsr"]["test_accuracy"], atol=1e-6)
