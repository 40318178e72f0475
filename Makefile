# The two README commands: `make demo` (set up + run the quickstart) and `make test`
# (set up + run the test suite). Both create .venv when missing, install torch first
# (TORCH_SPEC, default: the CPU build on local disk; e.g. TORCH_SPEC="torch==2.13.0 --index-url ..."
# for CUDA), then this package with its extras.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,track,export,serve,data,tune,hf,jobs,sklearn
PYTEST_ARGS ?=
# LINT=0 skips ruff and mypy in `make test` (e.g. while a change is still being typed).
LINT ?= 1
BIN := $(VENV)/bin
STAMP := $(VENV)/.trainengine-installed

.PHONY: setup demo system-deps lint test test-fast bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: setup
	$(BIN)/trainengine quickstart

# System packages the tests need beyond pip (headless Chromium, the PostgreSQL server, wrk): installed
# when running as root, otherwise the script prints the one command to run.
system-deps:
	@if test -f scripts/system-deps.sh; then bash scripts/system-deps.sh; fi

# Lint (ruff), formatting (ruff format), types (mypy on src/) and a reason on every suppression.
lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy src
	$(BIN)/python .ci/check_suppressions.py src tests

# --durations=25 keeps the slowest tests in view; pytest-timeout (pyproject) fails a hung one.
test: setup system-deps
ifeq ($(LINT),1)
	@$(MAKE) --no-print-directory lint
endif
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/overhead.py

docs: setup
	$(BIN)/python docs/_generate.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
