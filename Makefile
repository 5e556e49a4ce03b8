# One task runner. Every target creates .venv itself on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := src tests bench

.PHONY: help install demo serve test lint typecheck contracts unit bench bench-deps clean

help:
	@echo "make demo   - start 'tether serve --dev' and register an example agent with a key"
	@echo "make test   - lint, type-check, layering contracts, then the test suite with coverage"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make bench  - run every benchmark in bench/ and print its figures"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[server,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tether demo

lint: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck contracts
	$(BIN)/pytest -q --cov --cov-report=term

# The benches' peers and load generator: regopy (the `bench` extra) in the venv, the Cerbos PDP
# (a static binary in an npm package) in .bench-peers/ (gitignored), wrk from Debian.
BENCH_STAMP  := $(VENV)/.installed-bench
PEERS        := .bench-peers
CERBOS       := @cerbos/cerbos-linux-x64@0.55.0
CERBOS_STAMP := $(PEERS)/.installed-$(subst /,-,$(CERBOS))
SUDO         := $(if $(filter 0,$(shell id -u)),,sudo)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[server,dev,bench]'
	touch $(BENCH_STAMP)

$(CERBOS_STAMP):
	@echo "installing the Cerbos PDP ($(CERBOS), npm) into $(PEERS)/"
	@npm install --prefix $(PEERS) --no-audit --no-fund --loglevel=error $(CERBOS) >/dev/null
	@touch $@

bench-deps: $(BENCH_STAMP) $(CERBOS_STAMP)
	@command -v wrk >/dev/null || { echo "installing wrk (Debian)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

bench: bench-deps
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build src/*.egg-info
