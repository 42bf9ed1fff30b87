# The one place for commands. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test fuzz examples openapi-report bench bench-expiry bench-batch bench-settlement bench-members lint typecheck migrate check clean

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

BENCH_OUT ?= .jifen/bench

# Each script writes its result; the ratios against earn of this one run are printed last, even when a
# script failed its checks (make then fails too).
bench: install
	@mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.json
	@ok=0; \
	$(BIN)/python bench/bench_ledger.py --result $(BENCH_OUT)/ledger.json || ok=1; \
	$(BIN)/python bench/bench_catalog.py --result $(BENCH_OUT)/catalog.json || ok=1; \
	$(BIN)/python bench/bench_conversion.py --result $(BENCH_OUT)/conversion.json || ok=1; \
	$(BIN)/python bench/ratios.py $(BENCH_OUT); \
	exit $$ok

bench-batch: install
	$(BIN)/python bench/bench_batch.py $(ARGS)

bench-expiry: install
	$(BIN)/python bench/bench_expiry.py

bench-settlement: install
	$(BIN)/python bench/bench_settlement.py

# Sizes are flags: make bench-members BENCH_MEMBERS_ARGS="--members 100000 --postings 1000000"
bench-members: install
	$(BIN)/python bench/bench_members.py $(BENCH_MEMBERS_ARGS)

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
