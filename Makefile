# clm-spark — every target creates .venv and installs the pinned dependencies when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?= conf/clm.yaml
SCALE ?= 1
BACKFILL ?= 0
BENCH_CONFIG ?= conf/bench.yaml

.PHONY: help setup test test-fast lint demo package bench clean java-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

java-check:
	@v=$$(java -version 2>&1 | awk -F'"' '/version/ {print $$2}'); \
	major=$${v%%.*}; \
	if [ -z "$$v" ]; then echo "clm-spark needs Java 17 or newer: no 'java' on PATH (install openjdk-17-jre)"; exit 1; fi; \
	if [ "$$major" -lt 17 ] 2>/dev/null; then echo "clm-spark needs Java 17 or newer, found $$v"; exit 1; fi

$(STAMP):
	@$(MAKE) --no-print-directory java-check
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e . || $(VENV)/bin/pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP) ## create .venv and install the pinned dependencies

test: $(STAMP) ## run the whole test suite
	$(PY) -m pytest -q

test-fast: $(STAMP) ## run the tests that need no pipeline run (unit, transform, contract)
	$(PY) -m pytest -q -m "not pipeline"

lint: $(STAMP) ## ruff check + format check
	$(VENV)/bin/ruff check clm_spark benchmarks jobs tests deploy
	$(VENV)/bin/ruff format --check clm_spark benchmarks jobs tests deploy

demo: $(STAMP) ## generate sample data, run several days, print the summary
	$(VENV)/bin/clm demo --config $(CONFIG)

package: $(STAMP) ## build the wheel and dist/clm_spark.zip for spark-submit --py-files
	rm -rf dist build/lib && $(PY) -m pip wheel -q --no-deps -w dist .
	$(PY) -c "import shutil; shutil.make_archive('dist/clm_spark', 'zip', '.', 'clm_spark')"
	@ls -1 dist

bench: $(STAMP) ## benchmark at SCALE (default 1), BACKFILL dates (default 0), BENCH_CONFIG
	$(PY) -m benchmarks --scale $(SCALE) --backfill-days $(BACKFILL) --config $(BENCH_CONFIG)

clean: ## remove generated data and build output (keeps .venv)
	rm -rf data build dist bench/results/*.tmp
