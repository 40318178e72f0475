# The two README commands: `make demo` (set up + run the quickstart) and `make test`
# (set up + run the test suite). Both create .venv when missing, install torch first
# (TORCH_SPEC, default: the CPU build on local disk; e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
# for CUDA), then this package with its extras.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,track,export,serve
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.trainengine-installed

.PHONY: setup demo test test-fast bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: setup
	$(BIN)/trainengine quickstart

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/overhead.py

docs: setup
	$(BIN)/python docs/_generate.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
