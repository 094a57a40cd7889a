# Every target creates .venv and installs what it needs on first use, so `make demo` and
# `make test` are all a fresh clone needs (Python 3.11+ and pip). The demo needs the runtime
# dependencies only; test, lint and synth add the dev extra (pytest, moto, CDK, linters).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
#: The Lambda image's runtime dependencies, pinned with hashes (`make lock`); stages/Dockerfile installs them.
LOCK := stages/requirements.txt
#: The image's platform: the base image's Python, Amazon Linux 2023's glibc, cdk.json's x86_64.
LOCK_TARGET := --python-version 3.12 --python-platform x86_64-manylinux_2_34
LOCK_ARGS ?=
# Stamps named after the dependencies' checksum: each installs once per change of pyproject.toml or the lock.
DEPS_SUM := $(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
RUNTIME := $(VENV)/.runtime-$(DEPS_SUM)
DEV := $(VENV)/.dev-$(DEPS_SUM)
CONSTRAINTS := $(VENV)/lock-constraints.txt
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench synth lock clean

help: ## Show the targets and what they do
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

$(RUNTIME): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# Local runs use the versions the image ships: the lock's pins as constraints (without their hashes, which
	@# would switch pip to hash-checking mode, impossible for an editable install).
	sed -n 's/^\([A-Za-z0-9._-]*==[^ ]*\).*/\1/p' $(LOCK) > $(CONSTRAINTS)
	$(BIN)/python -m pip install --quiet -e . -c $(CONSTRAINTS)
	rm -f $(VENV)/.runtime-* $(VENV)/.installed-* && touch $@

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c $(CONSTRAINTS)
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

bench: $(RUNTIME) ## 1 M posts rows: raw floor, dlt's append (own venv, .bench-venv/), `icegate run`; then 10 M rows
	$(BIN)/python benchmarks/bench_run.py --rows 1000000 --with-dlt
	$(BIN)/python benchmarks/bench_run.py --rows 10000000 --repeat 1 --streamed-only

synth: $(DEV) ## Synthesise the CDK app into cdk.out (no Docker needed)
	$(BIN)/python app.py

lock: ## Re-pin stages/requirements.txt from pyproject.toml (needs PyPI; LOCK_ARGS=--upgrade for newer versions)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv
	@# Resolve with the dev tools first, so a package both need (typeguard: jsii pins it) gets the version the
	@# tests run with; then pin the runtime part of that resolution, wheels only, with every file's hash.
	dev=$$(mktemp) && trap 'rm -f "$$dev"' EXIT && \
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_TARGET) $(LOCK_ARGS) --quiet --no-header --no-annotate \
		-o "$$dev" && \
	$(BIN)/uv pip compile pyproject.toml -c "$$dev" $(LOCK_TARGET) $(LOCK_ARGS) --quiet \
		--generate-hashes --only-binary :all: --no-annotate --custom-compile-command "make lock" -o $(LOCK)

clean: ## Remove the local lake and caches (keeps .venv)
	rm -rf lake cdk.out .pytest_cache .mypy_cache .ruff_cache
