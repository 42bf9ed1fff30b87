# The one place for commands. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test fuzz examples openapi-report bench bench-expiry bench-batch bench-settlement lint typecheck migrate check clean

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

# Schemathesis over the three services, longer than the bounded pass in `make test` (tests/fuzzing.py):
# every phase, FUZZ_EXAMPLES examples per operation; prints cases and failures per service.
FUZZ_EXAMPLES ?= 100
fuzz: install
	JIFEN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) JIFEN_FUZZ_PHASES=examples,coverage,fuzzing,stateful \
		$(BIN)/python -m pytest tests/services/test_openapi_fuzz.py -s -q

# Records the OpenAPI examples from real answers ({service}_service/openapi_examples.json).
examples: install
	$(BIN)/python -m tests.openapi

# Counts examples and problem+json errors in the OpenAPI, and schemathesis' conformance failures.
openapi-report: install
	$(BIN)/python tools/openapi_report.py --schemathesis

bench: install
	$(BIN)/python bench/bench_ledger.py
	$(BIN)/python bench/bench_catalog.py
	$(BIN)/python bench/bench_conversion.py

bench-batch: install
	$(BIN)/python bench/bench_batch.py

bench-expiry: install
	$(BIN)/python bench/bench_expiry.py

bench-settlement: install
	$(BIN)/python bench/bench_settlement.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy services ledger_service conversion_service catalog_service bench tools

migrate: install
	$(BIN)/jifen migrate

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
