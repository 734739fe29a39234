"""Test set-up: 8 forced CPU devices (before JAX is imported) and offline TFDS."""

import os
import pathlib

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
_shared_tfds = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tfds"
os.environ.setdefault("TFDS_DATA_DIR", str(_shared_tfds))

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
