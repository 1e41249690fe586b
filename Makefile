# Two commands do all the set-up on a fresh machine:
#   make demo   installs policysearch into .venv and runs the main job on the embedded digits set
#   make test   installs it (with the test extras) and runs the default test suite
# make docs builds the docs site into build/site (docs/mkdocs.yml; tools in build/docs-venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all lint install bench docs docs-examples

$(BIN)/policysearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev,bench]"
	touch $@

install: $(BIN)/policysearch

demo: install
	$(BIN)/policysearch demo --overwrite

test: install  # both cores: tests in two processes (pytest-xdist), one torch thread each
	$(BIN)/python -m pytest -q -n 2

# ruff (style, import order, likely bugs), then import-linter's layer and no-cycle contracts
# (pyproject.toml) on the package as installed: envs/ and policies/ are mapped in by package-dir.
lint: install
	$(BIN)/ruff check .
	rm -rf build/view && $(BIN)/pip install -q --no-deps --no-build-isolation --target build/view .
	cd build/view && PYTHONPATH=. ../../$(BIN)/lint-imports ../../pyproject.toml

test-all: install  # includes the slow tests that really train
	$(BIN)/python -m pytest -q -n 2 -m ""

bench: install
	$(BIN)/python benchmarks/inner_loop.py

# The docs site. Its tools (the `docs` extra, read from pyproject.toml) live in their own venv: griffe
# reads the source, so the docs need neither torch nor the package's other dependencies. The package
# is installed into build/view without dependencies, so that griffe sees policysearch.envs and
# policysearch.policies where pyproject maps them in. Serve it with
# `build/docs-venv/bin/mkdocs serve -f docs/mkdocs.yml` after `make docs`.
DOCS_VENV ?= build/docs-venv
DOCS_BIN := $(DOCS_VENV)/bin
DOCS_EXTRA := import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"])

$(DOCS_BIN)/mkdocs: pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_BIN)/pip install --upgrade pip
	$(DOCS_BIN)/pip install $$($(DOCS_BIN)/python -c '$(DOCS_EXTRA)')
	touch $@

docs: $(DOCS_BIN)/mkdocs
	rm -rf build/view
	$(DOCS_BIN)/pip install -q --no-deps --no-build-isolation --target build/view .
	NO_MKDOCS_2_WARNING=1 $(DOCS_BIN)/mkdocs build --strict -f docs/mkdocs.yml

docs-examples: install  # runs every example of the guides, each page in a fresh folder (CI runs it)
	$(BIN)/python docs/run_examples.py --jobs 2
