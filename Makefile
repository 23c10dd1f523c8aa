# CareVault: `make run` for a working platform with demo data, `make test` for every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PATIENTS ?= 1000
DEMO_PROFESSIONALS ?= 200
# The port `make run` serves on (127.0.0.1); in dev, tokens, links and the demo file follow it.
PORT ?= 8000
export CAREVAULT_TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# Test processes (pytest-xdist): each has its own PostgreSQL database and temporary files; a
# test file stays in one process, so its module-scoped servers and browsers start once.
TEST_WORKERS ?= auto

.PHONY: run install test lint typecheck pytest security slow reliability clean-var

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/carevault init
	$(BIN)/carevault pki init
	$(BIN)/carevault demo --if-empty --patients $(DEMO_PATIENTS) --professionals $(DEMO_PROFESSIONALS) \
		--port $(PORT)
	$(BIN)/carevault serve --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench) examples
	$(BIN)/ruff format --check src

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=30 -m "not slow"

# The security suites alone (the access matrix; schemathesis on /openapi.json, the parser
# fuzzers, sqlmap: docs/security/attacks.md); `make test` runs them too.
security: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) -m security

# What `make test` leaves out for its many minutes (sqlmap): `.ci/run` runs it after `make test`.
slow: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) -m slow

# The fault and recovery tests alone (tests/reliability: restore drill, disk full, syslog
# outage, failover; docs/operations.md); `make test` runs them too. -rP shows what the passed
# tests printed: the failover's measured write gap.
reliability: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -rP tests/reliability

test: lint typecheck pytest
