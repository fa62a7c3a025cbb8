# LHCIE exchange. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCKS := requirements
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help install install-runtime install-test install-bench run test test-fast soak bench lint lock rabbitmq \
	chromium oidc-provider podman images chart-check test-images clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Each dependency group is installed from its own lock, every file checked against its hash; the project
# itself goes in editable afterwards, without dependencies (they are all in the locks). uv installs them:
# pip fetches one file at a time and byte-compiles everything, and took 324 s of make run's 342 s on a
# fresh clone here; uv fetches in parallel (README, Quickstart, for the figures). uv itself comes from
# its own hashed lock, with pip.
install: install-test ## create .venv with the project and every group (runtime, test, bench): .venv/bin/lhcie

install-runtime: $(VENV)/.runtime ## .venv with the runtime dependencies only (what make run needs)
install-test: $(VENV)/.test ## .venv with runtime, test and bench (make test runs the bench's smoke test)
install-bench: $(VENV)/.bench ## .venv with runtime and bench (what make bench needs)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

UV := $(BIN)/uv
INSTALL := $(UV) pip install --quiet --python $(BIN)/python

$(UV): $(LOCKS)/uv.lock | $(BIN)/python
	$(PIP) --require-hashes -r $(LOCKS)/uv.lock
	@touch $@

$(VENV)/.runtime: pyproject.toml $(LOCKS)/runtime.lock | $(UV)
	$(INSTALL) --require-hashes -r $(LOCKS)/runtime.lock
	$(INSTALL) --no-deps -e .
	@touch $@

$(VENV)/.test: $(VENV)/.runtime $(LOCKS)/test.lock $(LOCKS)/bench.lock tests/fhir_validator/package-lock.json
	$(INSTALL) --require-hashes -r $(LOCKS)/test.lock -r $(LOCKS)/bench.lock
	@# The independent FHIR R4 validator the MHD tests run every answer through (Medplum's, on Node).
	cd tests/fhir_validator && npm ci --no-audit --no-fund --silent
	@touch $@ $(VENV)/.bench

$(VENV)/.bench: $(VENV)/.runtime $(LOCKS)/bench.lock
	$(INSTALL) --require-hashes -r $(LOCKS)/bench.lock
	@touch $@

run: install-runtime ## the whole exchange on http://127.0.0.1:8080 with embedded adapters and demo data
	$(BIN)/lhcie run

oidc-provider: tests/oidc/node_modules/.package-lock.json ## the certified OpenID provider the sign-in tests start (npm)

tests/oidc/node_modules/.package-lock.json: tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

rabbitmq: ## make sure RabbitMQ runs on 127.0.0.1:5672 (installs Debian's package if missing)
	@scripts/ensure-rabbitmq.sh

chromium: ## make sure Debian's Chromium is installed for the browser tests
	@scripts/ensure-chromium.sh

test: lint rabbitmq chromium oidc-provider ## make lint, then the whole test suite (real RabbitMQ; starts what else it needs)
	$(BIN)/python -m pytest

test-fast: install-test ## unit and contract tests on the embedded adapters only
	$(BIN)/python -m pytest tests/unit tests/contract -m "not rabbitmq"

# moto (the S3 test server) grows without bound under sustained load: the exchange runs on files by default
# and the raw S3 baseline still runs on moto. BENCH_ARGS="--object-store s3" measures through S3 too.
BENCH_ARGS ?= --object-store fs

bench: install-bench rabbitmq ## throughput, latency and memory beside raw RabbitMQ, raw S3 and MESH (bench/results/)
	$(BIN)/lhcie bench $(BENCH_ARGS)

soak: install-test rabbitmq podman ## long runs: RabbitMQ restarted mid-stream, the fault run (100 kills, broker, S3 and store outages), the API fuzzed at length, the images rebuilt from nothing
	$(BIN)/python -m pytest -m soak tests/soak tests/faults tests/images

# ruff's rules and mypy's strictness are in pyproject.toml; the boundary test is the import walls
# (docs/architecture.md, The walls). make test runs this first, so CI enforces it.
LINTED := lhcie services shared tests

lint: install-test ## static checks: ruff (lint and format check), mypy, the import-boundary test
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests/unit/test_boundaries.py

# uv resolves and hashes (pip-compile would do the same, slower). Test and bench are resolved within the
# runtime's pins, and bench within test's, so the groups install side by side in one venv.
# uv's own version is pinned in requirements/uv.lock (the installer above).
COMPILE = $(UV) pip compile --quiet --python-version 3.11 --generate-hashes --no-header --annotation-style line

lock: $(UV) ## re-pin requirements/{runtime,test,bench}.lock, with hashes, from pyproject.toml
	$(COMPILE) pyproject.toml -o $(LOCKS)/runtime.lock
	$(COMPILE) pyproject.toml --extra test -c $(LOCKS)/runtime.lock -o $(LOCKS)/test.lock
	$(COMPILE) pyproject.toml --extra bench -c $(LOCKS)/runtime.lock -c $(LOCKS)/test.lock -o $(LOCKS)/bench.lock

podman: ## make sure podman, buildah, runc and mmdebstrap are installed (Debian's packages)
	@scripts/ensure-podman.sh

images: ## build every image with podman from a local Debian base (scripts/build-images.sh; --list names them)
	scripts/build-images.sh

chart-check: install ## render the chart with every values file (embedded Helm) and validate every object
	$(BIN)/python scripts/chart-check.py

# The images built here and the chart's manifests started as podman pods against the real RabbitMQ, moto
# and SecantusDB (tests/images; README, Kubernetes: what was proven here).
test-images: install rabbitmq podman ## build the images and run the chart's pods: probes, helm test, a document trip, a rolling update
	$(BIN)/python -m pytest -m "images and not soak" tests/images
	@cat .lhcie/images-report.json

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) $(VENV)-lock .lhcie
