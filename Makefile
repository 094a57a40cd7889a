# Every target creates .venv and installs what it needs on first use, so `make demo` and
# `make test` are all a fresh clone needs (Python 3.11+ and pip). The demo needs the runtime
# dependencies only; test, lint and synth add the dev extra (pytest, moto, CDK, linters).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stamps named after pyproject.toml's checksum: each installs once per change of the dependencies.
PYPROJECT_SUM := $(shell cksum < pyproject.toml | cut -d' ' -f1)
RUNTIME := $(VENV)/.runtime-$(PYPROJECT_SUM)
DEV := $(VENV)/.dev-$(PYPROJECT_SUM)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench synth clean

help: ## Show the targets and what they do
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	rm -f $(VENV)/.runtime-* $(VENV)/.installed-* && touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.dev-* && touch $@

install: $(DEV) ## Create .venv and install icegate with its dev tools (tests, linters, CDK)

demo: $(RUNTIME) ## Ingest the bundled samples into ./lake and print the summary
	$(BIN)/icegate run samples/landing --lake lake --expect samples/expected.json
	$(BIN)/icegate tables --lake lake

test: $(DEV) ## Run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(RUNTIME) ## 1,000,000 posts rows: raw floor, dlt's append (own venv, .bench-venv/), `icegate run`
	$(BIN)/python benchmarks/bench_run.py --rows 1000000 --with-dlt

synth: $(DEV) ## Synthesise the CDK app into cdk.out (no Docker needed)
	$(BIN)/python app.py

clean: ## Remove the local lake and caches (keeps .venv)
	rm -rf lake cdk.out .pytest_cache .mypy_cache .ruff_cache
