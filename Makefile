# One task runner. Every target creates .venv itself on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SRC    := src tests bench examples docs/_hooks

.PHONY: help install bytecode demo serve test lint typecheck contracts unit docs bench bench-deps clean \
	monitor-clean-run loadtest soak fuzz

help:
	@echo "make demo   - play the three use cases on the embedded defaults; exit 0 only if all behave"
	@echo "make test   - lint, type-check, layering contracts, then the test suite with coverage"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make docs   - build the documentation (mkdocs) into site/, every warning an error"
	@echo "make bench  - run every benchmark in bench/ and write docs/benchmarks.md"
	@echo "make loadtest - ext_authz 300/s for 10 min, the MCP gateway 200/s for 5 min, 3x overload"
	@echo "make soak   - an hour at half those rates: memory, descriptors, connections must stay flat"
	@echo "make fuzz   - the hostile-input and fault suites at full length (about an hour)"
	@echo "make monitor-clean-run - 10 minutes of clean traffic: the monitor must raise 0 alerts"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	  -e '.[server,dev,sql,otel,scan,docs]'
	touch $(STAMP)

# Bytecode for Tether's own source, kept current: where PYTHONDONTWRITEBYTECODE is set, no
# process writes it, and every `tether` process (a server, a CLI call) would compile the whole
# package again at start. Only files changed since the last run are compiled.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 src

install: $(STAMP)

# The demo's data source is a throwaway PostgreSQL cluster from Debian's server binaries.
demo: bytecode
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql (the demo's data source)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	$(BIN)/tether demo --approve

lint: $(STAMP)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest -q

docs: $(STAMP)  # not --quiet: it hides the warnings --strict counts
	$(BIN)/mkdocs build --strict

test: lint typecheck contracts docs bytecode
	$(BIN)/pytest -q --cov --cov-report=term --durations=25

# The benches' peers and load generator: regopy (the `bench` extra) in the venv, the Cerbos PDP
# (a static binary in an npm package) in .bench-peers/ (gitignored), wrk from Debian.
BENCH_STAMP  := $(VENV)/.installed-bench
PEERS        := .bench-peers
CERBOS       := @cerbos/cerbos-linux-x64@0.55.0
CERBOS_STAMP := $(PEERS)/.installed-$(subst /,-,$(CERBOS))
SUDO         := $(if $(filter 0,$(shell id -u)),,sudo)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[server,dev,sql,bench]'
	touch $(BENCH_STAMP)

$(CERBOS_STAMP):
	@echo "installing the Cerbos PDP ($(CERBOS), npm) into $(PEERS)/"
	@npm install --prefix $(PEERS) --no-audit --no-fund --loglevel=error $(CERBOS) >/dev/null
	@touch $@

# The official MCP conformance suite (npm), run against an MCP server and through the gateway.
CONFORMANCE       := @modelcontextprotocol/conformance@0.1.11
CONFORMANCE_STAMP := $(PEERS)/.installed-$(subst /,-,$(CONFORMANCE))

$(CONFORMANCE_STAMP):
	@echo "installing the MCP conformance suite ($(CONFORMANCE), npm) into $(PEERS)/"
	@npm install --prefix $(PEERS) --no-audit --no-fund --loglevel=error $(CONFORMANCE) >/dev/null
	@touch $@

# IBM ContextForge (the MCP gateway benchmark's peer) needs Python >= 3.12, < 3.14: the first such
# interpreter found gets a venv in .bench-peers/. None found: say so and go on (the benchmark then
# reports ContextForge as not available). 3.12 first: the version it was measured on here.
# bench/_contextforge.py looks for the same stamp.
CONTEXTFORGE_VERSION := 1.1.0
CONTEXTFORGE         := mcp-contextforge-gateway==$(CONTEXTFORGE_VERSION)
CONTEXTFORGE_VENV    := $(PEERS)/contextforge-venv
CONTEXTFORGE_STAMP   := $(CONTEXTFORGE_VENV)/.installed-$(CONTEXTFORGE_VERSION)

$(CONTEXTFORGE_STAMP):
	@py=; for p in python3.12 python3.13 $$(pyenv root 2>/dev/null)/versions/3.1[23]*/bin/python3; do \
	  $$p -c 'import sys; sys.exit(not (3, 12) <= sys.version_info < (3, 14))' 2>/dev/null && \
	    { py=$$p; break; }; done; \
	if [ -z "$$py" ]; then \
	  echo "no Python 3.12 or 3.13 found: IBM ContextForge ($(CONTEXTFORGE)) not installed;"; \
	  echo "the MCP gateway benchmark will report it as not available"; exit 0; fi; \
	echo "installing IBM ContextForge ($(CONTEXTFORGE), PyPI) into $(CONTEXTFORGE_VENV)/ with $$py"; \
	rm -rf $(CONTEXTFORGE_VENV) && $$py -m venv $(CONTEXTFORGE_VENV) && \
	$(CONTEXTFORGE_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	$(CONTEXTFORGE_VENV)/bin/python -m pip install --quiet '$(CONTEXTFORGE)' && touch $@

.PHONY: bench-contextforge
bench-contextforge: $(CONTEXTFORGE_STAMP)

# Debian packages the benches run: wrk (HTTP load), nginx (ext_authz behind nginx), PostgreSQL
# (credentials, replicas): each installed when missing.
bench-deps: $(BENCH_STAMP) $(CERBOS_STAMP) $(CONFORMANCE_STAMP) bench-contextforge
	@missing=; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null || missing="$$missing nginx"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then echo "installing Debian's$$missing (the benches run them)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# Runs each bench/bench_*.py, then writes its figures, floors, peers and ratios between the
# markers of docs/benchmarks.md, with the machine described.
bench: bench-deps
	$(BIN)/python bench/report.py

# Issue 13: a real `tether serve` on loopback at a constant rate (open loop); about 17 minutes.
loadtest: $(STAMP)
	@rc=0; for run in "ext-authz --rate 300 --seconds 600" "mcp --rate 200 --seconds 300" \
	  "overload --seconds 60"; do $(BIN)/python bench/loadtest.py $$run || rc=1; done; exit $$rc

soak: $(STAMP)
	$(BIN)/python bench/loadtest.py soak --seconds 3600

# The quick versions of these run in `make test`; here each target gets thousands of cases.
fuzz: $(STAMP)
	TETHER_FUZZ=1 TETHER_FAULTS_FULL=1 $(BIN)/pytest -q -p no:cacheprovider tests/fuzz \
	  tests/integration/api/test_hostile_openapi.py tests/integration/faults

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage build src/*.egg-info

# Issue 10's proof of no false positives: 10 minutes of a clean fleet's traffic, 0 alerts.
monitor-clean-run: $(STAMP)
	$(BIN)/python bench/monitor_clean_run.py --seconds 600 --rate 100
