# One entry point for every task; each target installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTOS := $(shell find proto -name '*.proto')

.PHONY: run test check lint proto demo migrate bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

## run: start the service on the embedded SQLite default (data under ./data)
run: $(STAMP)
	$(BIN)/python -m server $(ARGS)

## test: the whole test suite (PostgreSQL tests run when it is reachable; CI=true requires it)
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## lint: buf lint, ruff, and a check that generated code matches the protos
lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/ruff check server clients tests bench
	$(BIN)/python proto/gen.py --check

check: lint test

## proto: regenerate the Python contracts in postbacks/ from proto/
proto: $(STAMP)
	$(BIN)/python proto/gen.py

migrate: $(STAMP)
	$(BIN)/python -m server migrate

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
