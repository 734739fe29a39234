"""MkDocs hook: the build fails when a public symbol has no API entry.

Every name in ``metagrad.estimators``, ``metagrad.models`` and ``metagrad.tasks``
``__all__`` must appear exactly once as a ``::: metagrad.<package>.<name>``
entry of an ``api/`` page, and every entry must name a public symbol (as
optax's documentation coverage check does for its API). ``tests/test_docs.py``
runs the same check without building the site.
"""

import importlib
import pathlib
import re

from mkdocs.exceptions import PluginError

PACKAGES = ("estimators", "models", "tasks")


def entries(api_dir: pathlib.Path) -> list[str]:
  """Every ``::: metagrad.X`` entry of the API pages, as ``package.name``."""
  return [m.group(1) for page in sorted(api_dir.glob("*.md"))
          for m in re.finditer(r"^::: metagrad\.(\S+)$", page.read_text(), re.M)]


def public() -> set[str]:
  return {f"{package}.{name}" for package in PACKAGES
          for name in importlib.import_module(f"metagrad.{package}").__all__}


def on_pre_build(config, **kwargs):
  del kwargs
  found = entries(pathlib.Path(config["docs_dir"]) / "api")
  problems = []
  if missing := sorted(public() - set(found)):
    problems.append(f"public but without an API entry: {', '.join(missing)}")
  if unknown := sorted(set(found) - public()):
    problems.append(f"API entries that are not public: {', '.join(unknown)}")
  if twice := sorted({name for name in found if found.count(name) > 1}):
    problems.append(f"documented twice: {', '.join(twice)}")
  if problems:
    raise PluginError("API reference coverage: " + "; ".join(problems))
