# The two commands: `make dev` runs the service on a private local PostgreSQL with pg_cron;
# `make test` runs the test suite. Both install what they need first.
PYTHON ?= python3
PORT ?= 8000
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test test-fast lint format check schema system-deps test-system-deps test-deps \
	test-tools install clean

# The service and what it needs to run, nothing more (`make dev`).
$(BIN)/processor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# The test tools on top (pytest, ruff, mypy, playwright, schemathesis, ...): `make test`,
# `make lint` and `make format` only.
$(VENV)/.test-tools: $(BIN)/processor pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/processor

test-tools: $(VENV)/.test-tools

system-deps:
	@deploy/local/install-system-deps.sh

# The same, and PgBouncer, which only the tests use.
test-system-deps:
	@deploy/local/install-system-deps.sh --tests

test-deps:
	@deploy/local/install-test-deps.sh

dev: system-deps install
	$(BIN)/processor dev --port $(PORT)

test: test-system-deps test-deps test-tools
	$(BIN)/pytest

# The unit tests only: no database, no system packages, a few seconds.
test-fast: test-tools
	$(BIN)/pytest tests/unit -q

# Regenerates sql/schema.sql from a freshly migrated private cluster (after a new migration).
schema: system-deps install
	$(BIN)/python -m processor.ops.schema

lint: test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy processor

format: test-tools
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
