# LHCIE exchange. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast soak bench lint lock rabbitmq chromium images clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the project and its pinned dependencies (.venv/bin/lhcie)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	@touch $@

run: install ## the whole exchange on http://127.0.0.1:8080 with embedded adapters and demo data
	$(BIN)/lhcie run

rabbitmq: ## make sure RabbitMQ runs on 127.0.0.1:5672 (installs Debian's package if missing)
	@scripts/ensure-rabbitmq.sh

chromium: ## make sure Debian's Chromium is installed for the browser tests
	@scripts/ensure-chromium.sh

test: install rabbitmq chromium ## the whole test suite (real RabbitMQ; starts what else it needs)
	$(BIN)/python -m pytest

test-fast: install ## unit and contract tests on the embedded adapters only
	$(BIN)/python -m pytest tests/unit tests/contract -m "not rabbitmq"

# moto (the S3 test server) grows without bound under sustained load: the exchange runs on files by default
# and the raw S3 baseline still runs on moto. BENCH_ARGS="--object-store s3" measures through S3 too.
BENCH_ARGS ?= --object-store fs

bench: install rabbitmq ## throughput, latency and memory beside raw RabbitMQ, raw S3 and MESH (bench/results/)
	$(BIN)/lhcie bench $(BENCH_ARGS)

soak: install rabbitmq ## long fault runs: RabbitMQ restarted mid-stream across five service processes
	$(BIN)/python -m pytest -m soak tests/soak

lint: install ## static checks
	$(BIN)/python -m compileall -q lhcie services shared tests

lock: ## re-pin requirements.lock from a fresh resolve of pyproject.toml
	rm -rf /tmp/lhcie-lock && $(PYTHON) -m venv /tmp/lhcie-lock
	/tmp/lhcie-lock/bin/pip install --quiet '.[test]'
	/tmp/lhcie-lock/bin/pip freeze --exclude lhcie > requirements.lock

images: ## build the six container images (needs a Docker engine)
	scripts/build-images.sh

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .lhcie
