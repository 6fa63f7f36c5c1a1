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

## run: start the service on the embedded SQLite default (data under ./data), in development mode: it prints
## a full-access development key, kept in data/dev.key, that production servers (no --dev-key-file) refuse
run: $(STAMP)
	$(BIN)/python -m server --dev-key-file data/dev.key $(ARGS)

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

## demo: a click, identify, first launch and purchase posted back to a local fake TikTok (temporary data dir)
demo: $(STAMP)
	$(BIN)/python -m clients.demo

migrate: $(STAMP)
	$(BIN)/python -m server migrate

## bench: the benchmarks, against their same-run ceilings where they have one (~14 min; writes bench/results.json).
## BENCH_ARGS="--quick" for a smoke run under 2 minutes; BENCH_ARGS="ingest-unary --profile" for one, profiled
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
