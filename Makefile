# Podgraft developer commands. `make run` and `make test` are the two commands of the README.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8443

.PHONY: run test lint typecheck unit integration e2e node chart image cluster cluster-down bench bench-audit bench-events bench-instructions certs clean venv

venv: $(STAMP)

# The engine and the admission step compiled with mypyc in place (app/engine/*.so, app/admission/*.so,
# setup.py), rebuilt when one of their sources changes; without a C compiler (none, and not root to
# install Debian's gcc), their Python sources alone, with a message (hack/lib/compiler.sh).
$(STAMP): requirements-dev.lock requirements.lock pyproject.toml setup.py $(wildcard app/engine/*.py app/admission/*.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	compile=$$(hack/lib/compiler.sh $(BIN)/python) && PODGRAFT_COMPILE=$$compile $(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

certs/tls.crt: | $(STAMP)
	$(BIN)/podgraft certs generate --service podgraft --namespace podgraft --out certs

certs: certs/tls.crt

# Local development: no drain window on Ctrl-C.
run: $(STAMP) certs/tls.crt
	PODGRAFT_DRAIN_SECONDS=0 exec $(BIN)/podgraft serve --host $(HOST) --port $(PORT) --policies examples/policies \
		--tls-cert certs/tls.crt --tls-key certs/tls.key

lint: $(STAMP)
	$(BIN)/ruff check app tests bench hack setup.py
	$(BIN)/ruff format --check app tests bench hack setup.py
	$(BIN)/lint-imports

# mypy strict on the package, and on the benchmarks and the cluster tooling (scripts no test imports).
typecheck: $(STAMP)
	$(BIN)/mypy app
	$(BIN)/mypy -p hack
	$(BIN)/mypy bench

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit tests/golden

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

chart: $(STAMP)
	$(BIN)/pytest -q tests/chart

# A real node (root): containerd, runc and the CNI plugins from Debian, installed by hack/node/setup.sh.
node: $(STAMP)
	$(BIN)/pytest -q tests/node

# The server image from the Dockerfile, without a registry or a Docker daemon (root: podman and
# mmdebstrap from Debian, a bookworm base made here); cached by content. Prints `podgraft=IMAGE ARCHIVE`.
image:
	hack/image/build.sh

# The node tier's one-node cluster for a developer (root), with Podgraft installed by its chart and
# an injected demo Deployment; prints the KUBECONFIG to export. `make cluster-down` removes it all.
cluster: $(STAMP)
	$(BIN)/python -m hack.cluster up

cluster-down: $(STAMP)
	$(BIN)/python -m hack.cluster down

# Every tier: lint, types, the instruction counts, then all tests (unit, golden, property,
# integration, chart, e2e, node), then the tiers that run the engine in process again against its
# Python sources (PODGRAFT_ENGINE=interpreted: the fallback where it is not compiled).
test: lint typecheck bench-instructions
	$(BIN)/pytest -q -p no:cacheprovider tests
	PODGRAFT_ENGINE=interpreted $(BIN)/pytest -q -p no:cacheprovider $(INTERPRETED_TIERS)

INTERPRETED_TIERS := tests/unit tests/golden tests/property tests/integration

# Benchmarks (not part of `make test`): installs wrk (Debian) and builds the pinned vegeta.
bench: $(STAMP)
	command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	hack/vegeta/build.sh >/dev/null
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Instructions per admission (callgrind; about 10 s), part of `make test`: fails when a count rises
# more than 5% above bench/instructions.json. Installs valgrind and gcc from Debian when missing.
bench-instructions: $(STAMP)
	bench/setup.sh
	$(BIN)/python bench/instructions.py $(BENCH_ARGS)

# The audit benchmark (not part of `make test`): `podgraft audit` over 10,000 pods, the running audit's memory.
bench-audit: $(STAMP)
	$(BIN)/python bench/audit.py $(BENCH_ARGS)

# Events on the workload (not part of `make test`): admission latency with Events off, and on with a hung Events API.
bench-events: $(STAMP)
	command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	hack/vegeta/build.sh >/dev/null
	$(BIN)/python bench/events.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
	find app -name '*.so' -delete
