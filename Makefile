# The two commands: `make dev` runs the service on a private local PostgreSQL with pg_cron;
# `make test` runs the test suite. Both install what they need first.
PYTHON ?= python3
PORT ?= 8000
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test test-fast lint format check schema system-deps test-deps install clean

$(BIN)/processor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/processor

system-deps:
	@deploy/local/install-system-deps.sh

test-deps:
	@deploy/local/install-test-deps.sh

dev: system-deps install
	$(BIN)/processor dev --port $(PORT)

test: system-deps test-deps install
	$(BIN)/pytest

# The unit tests only: no database, no system packages, a few seconds.
test-fast: install
	$(BIN)/pytest tests/unit -q

# Regenerates sql/schema.sql from a freshly migrated private cluster (after a new migration).
schema: system-deps install
	$(BIN)/python -m processor.ops.schema

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy processor

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
