# Two commands on a fresh machine with Python 3.11: `make demo`, `make test`.
# Each creates its own virtualenv (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The prepared offline Omniglot copy beside the checkout (see ../shared/data/README.md).
export TFDS_DATA_DIR ?= $(abspath ../shared/data/tfds)

.PHONY: demo test test-fast bench report docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,examples,bench,docs]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m examples.estimator_showdown --out runs/showdown --overwrite

# The unit and property tier (under 5 minutes on 2 cores): run it while iterating.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -n 2 --maxschedchunk=2 -m unit --durations=10 tests

# Everything (what CI runs): the unit tier, then the integration tier on XLA's
# default CPU emitters (the ones users get; see tests/conftest.py).
test: test-fast
	METAGRAD_XLA_EMITTERS=default $(PY) -m pytest -n 2 --maxschedchunk=2 -m integration --durations=10 tests

bench: $(VENV)/.installed
	$(PY) -m benchmarks.run_all --out benchmarks/results

# README and docs tables from the committed results.json files (examples/results, benchmarks/results).
report: $(VENV)/.installed
	$(PY) -m examples.report examples/results --readme README.md --docs docs

# The documentation site into site/ (not committed), strictly: a broken link or
# reference, a docstring parameter the signature lacks, a public symbol without
# an API entry or a formula that cannot be rendered fails the build.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site

clean:
	rm -rf $(VENV) runs site .pytest_cache
