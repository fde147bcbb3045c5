# The two set-up commands: `make run` (serve API + local workers on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run` needs the package only; `make test` (and lint, bench) the test tools too.
RUN_STAMP := $(VENV)/.installed-run-stamp
DEV_STAMP := $(VENV)/.installed-stamp

.PHONY: run test install install-dev lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $(DEV_STAMP)

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

## Serve the API and local workers on 127.0.0.1:8000 (SQLite in ./hpo-data; migrates first).
run: install
	$(BIN)/hpo serve

## The whole test suite (PostgreSQL too when HPO_TEST_DATABASE_URL is set): two pytest processes
## (pytest-xdist, a test file at a time each), then the tests marked `serial` alone. The 15
## slowest tests are listed, so that a test that grows shows up before the suite does.
test: install-dev
	$(BIN)/pytest -n 2 --dist loadfile -m 'not serial' --durations=15
	$(BIN)/pytest -m serial

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python bench/budget_overshoot.py

clean:
	rm -rf $(VENV) hpo-data .pytest_cache .mypy_cache .ruff_cache
