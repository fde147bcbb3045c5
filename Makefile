# The two set-up commands: `make run` (serve API + local workers on SQLite) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve the API and local workers on 127.0.0.1:8000 (SQLite in ./hpo-data; migrates first).
run: install
	$(BIN)/hpo serve

## The whole test suite (PostgreSQL too when HPO_TEST_DATABASE_URL is set): two pytest processes
## (pytest-xdist, a test file at a time each), then the tests marked `serial` alone. The 15
## slowest tests are listed, so that a test that grows shows up before the suite does.
test: install
	$(BIN)/pytest -n 2 --dist loadfile -m 'not serial' --durations=15
	$(BIN)/pytest -m serial

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/budget_overshoot.py

clean:
	rm -rf $(VENV) hpo-data .pytest_cache .mypy_cache .ruff_cache
