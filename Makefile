# Every target creates .venv and installs the project on first use, so `make demo` and
# `make test` are all a fresh clone needs (Python 3.11+ and pip).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench synth clean

help: ## Show the targets and what they do
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(INSTALLED) ## Create .venv and install icegate with its dev tools

demo: $(INSTALLED) ## Ingest the bundled samples into ./lake and print the summary
	$(BIN)/icegate run samples/landing --lake lake --expect samples/expected.json
	$(BIN)/icegate tables --lake lake

test: $(INSTALLED) ## Run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(INSTALLED) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(INSTALLED) ## End-to-end benchmark: 1,000,000 posts rows through `icegate run`
	$(BIN)/python benchmarks/bench_run.py --rows 1000000

synth: $(INSTALLED) ## Synthesise the CDK app into cdk.out (no Docker needed)
	$(BIN)/python app.py

clean: ## Remove the local lake and caches (keeps .venv)
	rm -rf lake cdk.out .pytest_cache .mypy_cache .ruff_cache
