# Two entry points do all the set-up on a fresh machine with Python 3.11, pip and make:
#   make demo   the main job: a supervised swarm on an embedded local Ray
#   make test   the whole test suite, fast tiers first: unit, then integration, then e2e, then faults
# and, once set up:
#   make test-unit / test-integration / test-e2e / test-faults   one tier
#   make bench          every benchmark (figures in benchmarks/results/summary.md)
#   make bench-quick    the same with --quick, a smoke test (or: make bench QUICK=1)
#   make bench-readme   the README's performance table, rewritten from the last results
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test test-unit test-integration test-e2e test-faults bench bench-quick bench-readme clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,llm]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kaizen-ray demo

test: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/integration tests/e2e tests/faults

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

test-faults: $(STAMP)
	$(BIN)/python -m pytest tests/faults

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

bench-readme: $(STAMP)
	$(BIN)/python -m benchmarks --readme

clean:
	rm -rf $(VENV) .pytest_cache
