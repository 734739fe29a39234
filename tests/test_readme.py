"""The Python code blocks of README.md and of the documentation pages run as
written (each in a fresh namespace)."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").rglob("*.md"))
# A block shown on two pages (README and getting started) runs once.
SOURCES = list({block: (page.relative_to(ROOT), block) for page in reversed(PAGES)
                for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)}.values())
BLOCKS = [block for _, block in SOURCES]


def test_readme_has_code():
  assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index):
  page, block = SOURCES[index]
  exec(compile(block, f"{page} block {index}", "exec"), {"__name__": "readme"})
