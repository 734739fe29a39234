"""The library's docstring examples run (``Examples:`` blocks, doctest syntax)."""

import doctest
import importlib
import pkgutil

import pytest

import metagrad

MODULES = sorted(
    f"metagrad.{package}.{info.name}"
    for package in ("estimators", "models", "tasks")
    for info in pkgutil.iter_modules(importlib.import_module(f"metagrad.{package}").__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                           verbose=False)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_modules_with_examples_are_found():
  assert "metagrad.models._optax_rule" in MODULES and len(MODULES) > 20
  assert metagrad.__version__
