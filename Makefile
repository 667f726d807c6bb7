# tokenbroker: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
BIN       := $(VENV)/bin
PY        := $(BIN)/python
STAMP     := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
ARGS      ?=
PYTEST_ARGS ?= -n 2
# sam and the template checks need a region and never reach AWS; the venv's bin supplies python3.12.
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Real OAuth peer (panva/oidc-provider) used by tests/peers: installed from the lock file.
OIDC_PEER := tests/peers/oidc
OIDC_DEPS := $(OIDC_PEER)/node_modules/.package-lock.json

.PHONY: help venv run test lint typecheck templates unit pytest build bench soak e2e openapi clean

help:
	@echo "make run    - create .venv (python3.12), install, start the local stack with provider sandboxes"
	@echo "make test   - create .venv if needed, then lint, type check, template checks and the test suite"
	@echo "make e2e    - browser test of both connect flows (headless Chromium)"
	@echo "make build  - sam build (no Docker needed)"
	@echo "make bench  - measure the quality bars into .bench/results.json"
	@echo "make soak   - the model-checked refresh with far more examples (tests/model)"

$(STAMP): pyproject.toml
	@py=$$(scripts/find-python312) || exit 1; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then \
	  rm -rf $(VENV); echo "creating $(VENV) with $$py"; $$py -m venv $(VENV) || exit 1; \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m infra.localstack $(ARGS)

test: $(STAMP) lint typecheck templates pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# sam build (no Docker; reused while its inputs are unchanged), then every built function is
# imported, initialised and invoked with only its code and the built layer on sys.path.
templates: $(STAMP)
	$(BIN)/cfn-lint template.yaml
	$(BIN)/sam validate --lint --template-file template.yaml
	$(PY) -m tests.template.buildcheck

$(OIDC_DEPS): $(OIDC_PEER)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20+) is needed for the oidc-provider peer tests"; exit 1; }
	npm ci --prefix $(OIDC_PEER) --no-audit --no-fund --loglevel=error
	touch $@

pytest: $(STAMP) $(OIDC_DEPS)
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# Both connect flows clicked through in headless Chromium (Debian's chromium; Playwright downloads no browser).
e2e: $(STAMP)
	@command -v chromium >/dev/null || { echo "make e2e needs chromium: apt-get install -y chromium"; exit 1; }
	$(BIN)/pytest tests/e2e/browser/browser_flows.py -q -p no:xdist

build: $(STAMP)
	$(BIN)/sam build --template-file template.yaml

bench: $(STAMP)
	$(PY) -m infra.bench $(ARGS)

# The refresh model (tests/model) far beyond make test's budget: override MODEL_EXAMPLES etc. to taste.
soak: $(STAMP)
	MODEL_EXAMPLES=$${MODEL_EXAMPLES:-20000} MODEL_STEPS=$${MODEL_STEPS:-25} \
	MODEL_MOTO_EXAMPLES=$${MODEL_MOTO_EXAMPLES:-400} $(BIN)/pytest tests/model -q -p no:xdist --timeout 3600

clean:
	rm -rf .aws-sam .bench .mypy_cache .ruff_cache build *.egg-info shared/*.egg-info $(OIDC_PEER)/node_modules
