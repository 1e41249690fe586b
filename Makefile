# Two commands do all the set-up on a fresh machine:
#   make demo   installs policysearch into .venv and runs the main job on the embedded digits set
#   make test   installs it (with the test extras) and runs the default test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all lint install bench

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
