"""The documentation site: every public symbol has an API entry, and the site
builds strictly with every page of its navigation and every image it shows."""

import os
import pathlib
import re
import subprocess
import sys

from metagrad import estimators, models, tasks

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _hook(name: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, DOCS / "hooks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_public_symbol_has_one_api_entry():
  coverage = _hook("api_coverage")
  assert coverage.public() == {f"{pkg.__name__.split('.')[-1]}.{name}"
                               for pkg in (estimators, models, tasks) for name in pkg.__all__}
  coverage.on_pre_build({"docs_dir": str(DOCS)})    # what the build checks, without building


def test_the_build_refuses_an_undocumented_symbol(tmp_path):
  import pytest
  from mkdocs.exceptions import PluginError
  coverage = _hook("api_coverage")
  (tmp_path / "api").mkdir()
  pages = sorted((DOCS / "api").glob("*.md"))
  for page in pages:
    (tmp_path / "api" / page.name).write_text(page.read_text())
  first = tmp_path / "api" / "first-order.md"
  first.write_text(first.read_text().replace("::: metagrad.estimators.es_wsr\n", ""))
  with pytest.raises(PluginError, match="without an API entry: estimators.es_wsr"):
    coverage.on_pre_build({"docs_dir": str(tmp_path)})


def test_public_submodules_list_exactly_their_public_functions():
  import inspect
  pages = "\n".join(page.read_text() for page in (DOCS / "api").glob("*.md"))
  for pkg in (estimators, models, tasks):
    for name in pkg.__all__:
      module = getattr(pkg, name)
      if inspect.ismodule(module):
        entry = re.search(rf"^::: {module.__name__}\n    options:\n      members: \[(.*)\]$",
                          pages, re.M)
        assert entry, f"{module.__name__}: its API entry names no members"
        assert [m.strip() for m in entry.group(1).split(",")] == module.__all__


def test_every_page_has_one_title():
  for page in DOCS.rglob("*.md"):
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)     # not code comments
    titles = re.findall(r"^# .*$", prose, re.M)
    assert len(titles) == 1 or page.name == "changelog.md", (page, titles)


def _nav_pages(nav) -> list[str]:
  out = []
  for item in nav:
    value = next(iter(item.values())) if isinstance(item, dict) else item
    out += _nav_pages(value) if isinstance(value, list) else [value]
  return out


def test_the_site_builds_strictly_with_its_pages_and_images(tmp_path):
  import yaml    # PyYAML comes with the docs extra (mkdocs)
  config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
  pages = _nav_pages(config["nav"])
  assert all((DOCS / page).is_file() for page in pages), pages
  site = tmp_path / "site"
  env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
  done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  for page in pages:
    html = site / page.replace("index.md", "").replace(".md", "") / "index.html"
    assert html.is_file(), page
    text = html.read_text()
    # Every formula became MathML at build time (docs/hooks/mathml.py): none is left as LaTeX.
    assert 'class="arithmatex"' not in text, page
    # A pipe escaped for a table cell renders as "\|" inside a code span.
    assert "\\|" not in text, page
    for src in re.findall(r'<img [^>]*src="([^"]+)"', text):
      if not src.startswith(("http:", "https:", "data:")):
        assert (html.parent / src).resolve().is_file(), (page, src)
  assert (site / "choosing" / "index.html").read_text().count("<math ") >= 30
  # The API pages render the docstrings: signatures and the Args sections.
  api = (site / "api" / "first-order" / "index.html").read_text()
  assert "es_wsr" in api and "Parameters" in api and "population" in api


def _render(markdown_html: str) -> str:
  hook = _hook("mathml")
  page = type("Page", (), {"file": type("File", (), {"src_path": "page.md"})()})()
  return hook.on_page_content(markdown_html, page=page)


def test_the_math_hook_renders_mathml_and_refuses_what_it_cannot_render():
  import pytest
  out = _render('<p>a <span class="arithmatex">\\(\\sigma &lt; 1\\)</span></p>'
                '<div class="arithmatex">\\[\\frac{1}{P}\\]</div>')
  assert out.count("<math ") == 2 and 'display="block"' in out and "arithmatex" not in out
  assert "<mi>&#x003C3;</mi><mo>&#x0003C;</mo>" in out   # sigma, then the page's escaped "<" as an operator
  with pytest.raises(ValueError, match=r"page\.md.*\\sigmaa"):
    _render('<span class="arithmatex">\\(\\sigmaa\\)</span>')
  with pytest.raises(ValueError, match="cannot render"):
    _render('<span class="arithmatex">\\(\\frac{1}{\\)</span>')
