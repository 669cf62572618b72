# Headwater — every target sets itself up; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first interpreter that satisfies requires-python (>=3.11,<3.13).
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BROKER ?= tansu

.PHONY: help setup setup-bench-peer demo test test-unit lint format bench stack clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## Create .venv and install Headwater with dev extras (idempotent)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: Python 3.11 or 3.12 is required (none found on PATH)" >&2; exit 1; fi
	@echo "Setting up $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The Quix Streams peer of the benchmarks, in a venv of its own (it pins older Kafka clients).
QUIX_VENV := .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed

setup-bench-peer: $(QUIX_STAMP) ## Create .venv-quix for the benchmarks' Quix Streams peer

$(QUIX_STAMP): ops/bench/quix-requirements.txt
	@if [ -z "$(PYTHON)" ]; then echo "error: Python 3.11 or 3.12 is required (none found on PATH)" >&2; exit 1; fi
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet -r ops/bench/quix-requirements.txt
	@touch $(QUIX_STAMP)

demo: setup ## Run the local demo: embedded broker + Redis, Phishing replayed through the learner
	$(BIN)/headwater demo

test: setup setup-bench-peer ## Run the whole test suite: unit + integration on Apache Kafka, then a Tansu smoke subset
	@bash ops/install-test-tools.sh
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	[ $$rc -eq 0 ] || exit $$rc; \
	echo "Tansu smoke subset: the tests marked tansu_smoke again, on the embedded broker"; \
	HEADWATER_TEST_BROKER=tansu $(BIN)/python -m pytest -m tansu_smoke tests/integration; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no tansu_smoke test collected" >&2; exit 1; fi; exit $$rc

test-unit: setup ## Run only the unit tests (no broker, no Redis)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup setup-bench-peer ## Benchmarks: ingest vs raw consume; learner vs in-process River/VW; features vs faust/Bytewax; drift detectors; the query API; scorer replicas; the whole pipeline vs a Quix Streams peer
	$(BIN)/headwater bench ingest
	$(BIN)/headwater bench learner
	$(BIN)/headwater bench features
	$(BIN)/headwater bench drift
	$(BIN)/headwater bench api
	$(BIN)/headwater bench serving
	$(BIN)/headwater bench pipeline

stack: setup ## Start a local broker (BROKER=tansu|kafka) and Redis until Ctrl-C
	$(BIN)/headwater stack --broker $(BROKER)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
