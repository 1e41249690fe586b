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

test: install
	$(BIN)/python -m pytest -q

lint: install  # ruff: style, import order, likely bugs (configured in pyproject.toml)
	$(BIN)/ruff check .

test-all: install  # includes the slow tests that really train
	$(BIN)/python -m pytest -q -m ""

bench: install
	$(BIN)/python benchmarks/inner_loop.py
