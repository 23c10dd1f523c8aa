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

.PHONY: run install test lint typecheck pytest security clean-var

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
	$(BIN)/pytest -m "not slow"

# The security suites alone (the access matrix; schemathesis on /openapi.json, the parser
# fuzzers, sqlmap: docs/security/attacks.md); `make test` runs them too.
security: $(STAMP)
	$(BIN)/pytest -m security

test: lint typecheck pytest
