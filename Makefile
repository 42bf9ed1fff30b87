# The one place for commands. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test bench bench-expiry bench-batch bench-settlement lint typecheck migrate check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/jifen run

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/bench_ledger.py
	$(BIN)/python bench/bench_catalog.py
	$(BIN)/python bench/bench_conversion.py

bench-batch: install
	$(BIN)/python bench/bench_batch.py $(ARGS)

bench-expiry: install
	$(BIN)/python bench/bench_expiry.py

bench-settlement: install
	$(BIN)/python bench/bench_settlement.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy services ledger_service conversion_service catalog_service bench

migrate: install
	$(BIN)/jifen migrate

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
