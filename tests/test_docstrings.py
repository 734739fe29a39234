"""Every public symbol documents itself the same way: functions have Args,
Returns, a doctested Examples block and References with a year and an arXiv
id; classes have a doctested Examples block and, for records, their
Attributes. (tests/test_doctests.py runs the examples; tests/test_docs.py
checks that each symbol has its API page entry.)"""

import dataclasses
import inspect
import re

import pytest

from metagrad import estimators, models, tasks


def _public():
  for package in (estimators, models, tasks):
    for name in package.__all__:
      obj = getattr(package, name)
      short = package.__name__.split(".")[-1]
      if inspect.ismodule(obj):          # public submodules: models.protonet, tasks.evograd_toy
        for inner in obj.__all__:
          yield f"{short}.{name}.{inner}", getattr(obj, inner)
      elif inspect.isclass(obj) or inspect.isfunction(obj):
        yield f"{short}.{name}", obj


PUBLIC = dict(_public())
FUNCTIONS = sorted(name for name, obj in PUBLIC.items() if inspect.isfunction(obj))
CLASSES = sorted(name for name, obj in PUBLIC.items() if inspect.isclass(obj))


def _sections(doc: str) -> dict[str, str]:
  """Google-style sections by heading (``Args:``, ``Returns:``, ...)."""
  parts = re.split(r"^(\w[\w ]*):\s*$", doc, flags=re.M)
  return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_have_args_returns_examples_and_references(name):
  fn = PUBLIC[name]
  sections = _sections(inspect.getdoc(fn) or "")
  takes_arguments = any(p.kind is not p.VAR_KEYWORD
                        for p in inspect.signature(fn).parameters.values())
  missing = [s for s in ("Args", "Returns", "Examples", "References")
             if s not in sections and not (s == "Args" and not takes_arguments)]
  assert not missing, f"{name} lacks {missing}"
  assert ">>>" in sections["Examples"], f"{name}: Examples has no doctest"
  references = sections["References"]
  assert re.search(r"\b(19|20)\d\d\b", references), f"{name}: a reference without a year"
  assert re.search(r"arXiv:\d{4}\.\d{4,5}|no arXiv", references), (
      f"{name}: a reference without an arXiv id (or 'no arXiv' said)")


@pytest.mark.parametrize("name", CLASSES)
def test_classes_have_examples_and_records_their_attributes(name):
  cls = PUBLIC[name]
  doc = inspect.getdoc(cls) or ""
  assert doc and doc != inspect.getdoc(cls.__mro__[1]), f"{name} has no docstring of its own"
  sections = _sections(doc)
  assert ">>>" in sections.get("Examples", ""), f"{name}: no doctested Examples"
  if hasattr(cls, "_fields") or dataclasses.is_dataclass(cls):     # NamedTuples, dataclasses
    fields = (cls._fields if hasattr(cls, "_fields")
              else [f.name for f in dataclasses.fields(cls)])
    attributes = sections.get("Attributes", "")
    undocumented = [f for f in fields if not re.search(rf"^\s*{f}:", attributes, re.M)]
    assert not undocumented, f"{name}: fields without an Attributes entry: {undocumented}"


def test_the_lists_are_complete():
  assert len(FUNCTIONS) >= 60 and len(CLASSES) >= 20
  assert "models.protonet.episode_loss" in FUNCTIONS and "tasks.Episode" in CLASSES
