"""Test set-up: 8 forced CPU devices (before JAX is imported), offline TFDS and
a persistent XLA compilation cache shared by the xdist workers."""

import os
import pathlib
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
# Two tiers (``make test-fast`` = unit, ``make test`` = unit then integration):
# the unit tier uses XLA's older CPU fusion emitters (LLVM IR straight from
# HLO), which compile the suite's programs ~23% faster than the default MLIR
# fusion emitters (test_api + test_population under -n 2: 178 s -> 137 s);
# the integration tier runs on the default emitters users get
# (METAGRAD_XLA_EMITTERS=default, set by the Makefile), so a regression there
# is caught. XLA_FLAGS=--xla_cpu_use_fusion_emitters=... overrides both.
if ("xla_cpu_use_fusion_emitters" not in _flags
    and os.environ.get("METAGRAD_XLA_EMITTERS", "") != "default"):
  _flags += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = _flags.strip()
# Strict: implicit rank promotion (adding a [C] vector to an [N, H, W, C]
# array without saying how) raises in the library, the examples and the tests
# alike; environment variables, so the example subprocesses inherit it.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
_shared_tfds = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds"
os.environ.setdefault("TFDS_DATA_DIR", str(_shared_tfds))
# Most of the suite's time is XLA compiling: the examples' kill-and-resume
# tests, the benchmarks and the estimator matrices build the same programs from
# fresh closures again and again, which JAX's in-memory cache cannot see. The
# persistent cache keys on the program itself, so a repeat is a file read (the
# es_protonet resume test: 77 s -> 43 s alone). A fresh machine starts it empty
# and the whole suite then gains only ~5% (35 min 06 s vs 36 min 50 s on 2
# cores): with no minimum compile time it also stores thousands of tiny eager
# programs. Environment variables, so the example subprocesses of
# test_multiprocess share it; one directory per user, reused across local runs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"metagrad-xla-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile(
    "metagrad", max_examples=12, deadline=None, derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("metagrad")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def omniglot():
  """All 1623 characters at 28x28. In CI (CI=true) a missing dataset fails."""
  from metagrad import tasks
  try:
    return tasks.load_omniglot(image_size=28)
  except tasks.DatasetNotFoundError:
    if os.environ.get("CI", "").lower() == "true":
      raise
    pytest.skip("prepared Omniglot not found (set TFDS_DATA_DIR)")


# The integration tier: whole examples (smoke and kill-and-resume runs), the
# benchmarks' quick mode, the README's code blocks, the 2-process
# jax.distributed run, real Omniglot and the defaults on a conv4 ProtoNet
# episode. Everything else is the unit and property tier. Set here, by file,
# so a new test file lands in the unit tier unless it is named below.
INTEGRATION_FILES = frozenset({
    "test_examples.py", "test_readme.py", "test_benchmarks.py", "test_multiprocess.py",
    "test_omniglot.py", "test_defaults.py", "test_evograd_toy.py",
})
# ... and single tests of unit files that train a model end to end. Every
# test that reads the real dataset (the `omniglot` fixture: decoding it takes
# ~8 s on a fresh machine) is integration too.
INTEGRATION_TESTS = frozenset({
    "test_kronecker.py::test_kfc_and_cfc_run_and_learnable",
    "test_protonet.py::test_protonet_trained_by_backprop_beats_chance",
    "test_docs.py::test_the_site_builds_strictly_with_its_pages_and_images",
})
# Tests that take 30 s or more on 2 cores (measured, `--durations`), started
# first: xdist hands tests out in collection order, and a long test that
# starts last leaves the other worker idle at the end (longest first is the
# classic schedule for this). Longest first within this list.
SLOW_FIRST = (
    "test_multiprocess.py::test_es_protonet_trains_the_same_on_two_processes",
    "test_examples.py::test_resume_of_a_multi_run_example_starts_the_runs_that_had_not_started",
    "test_benchmarks.py::test_benchmark_quick[6]",
    "test_examples.py::test_smoke[estimator_showdown]",
    "test_benchmarks.py::test_benchmark_quick[7]",
    "test_benchmarks.py::test_benchmark_quick[4]",
    "test_examples.py::test_imaml_omniglot_smoke_reports_how_far_each_inner_loop_got[imaml]",
    "test_examples.py::test_smoke[meta_optimizers]",
    "test_examples.py::test_meta_optimizers_table2_smoke",
    "test_examples.py::test_imaml_omniglot_smoke_reports_how_far_each_inner_loop_got[maml]",
    "test_examples.py::test_smoke[evograd_rotation]",
    "test_kronecker.py::test_kfc_and_cfc_run_and_learnable",
    "test_api.py::test_grads_have_structure_shapes_and_dtypes_of_params",
    "test_protonet.py::test_protonet_trained_by_backprop_beats_chance",
)


def _node(item) -> str:
  return f"{item.path.name}::{item.name}"


def _rank(item) -> int:
  node = _node(item)
  for i, prefix in enumerate(SLOW_FIRST):
    if node.startswith(prefix):
      return i
  return len(SLOW_FIRST)


def pytest_collection_modifyitems(config, items):
  for item in items:
    integration = (item.path.name in INTEGRATION_FILES
                   or _node(item).split("[")[0] in INTEGRATION_TESTS
                   or "omniglot" in getattr(item, "fixturenames", ()))
    item.add_marker(pytest.mark.integration if integration else pytest.mark.unit)
  items.sort(key=_rank)   # stable: the rest keep their order
