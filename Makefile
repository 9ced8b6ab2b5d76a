# The two commands a newcomer types: `make run` and `make test`. Each creates
# .venv and installs what it needs on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
LOCK := requirements/image.lock

.PHONY: api-baseline helm-tools run test test-unit test-e2e protos protos-check lint format bench clean k8s deploy-check image-check prometheus dashboards dashboards-check rules-check lock lock-check

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@1

run: $(INSTALLED)
	$(VENV)/bin/blueprint up

# Prometheus (Debian's package) and helm are installed too: the observability tests run
# a real Prometheus and the chart tests a real helm. With BLUEPRINT_DEPLOY_CHECK set a
# missing helm fails the run instead of skipping the chart tests.
test: $(INSTALLED) prometheus helm-tools
	BLUEPRINT_DEPLOY_CHECK=1 $(PY) -m pytest

test-unit: $(INSTALLED)
	$(PY) -m pytest tests/unit

protos: $(INSTALLED)
	$(PY) scripts/gen_protos.py

protos-check: $(INSTALLED)
	scripts/check_stubs_fresh.sh $(PY)

lint: $(INSTALLED) $(BUF) protos-check dashboards-check lock-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd protos && ../$(BUF) lint
	cd protos && ../$(BUF) breaking --against api-baseline.binpb

# The released API that `make lint` holds every change to (buf's FILE rules: nothing in
# a v1 package may change incompatibly on the wire, in JSON or in generated code).
# Refresh it only when a release is cut, after `make lint` has passed.
api-baseline: $(BUF)
	cd protos && ../$(BUF) build --exclude-source-info -o api-baseline.binpb

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(INSTALLED)
	$(PY) -m bench

prometheus:
	scripts/observability/install_prometheus.sh

helm-tools: $(INSTALLED)
	DEPLOY_TOOLS=helm PYTHON=$(PY) scripts/deploy/install_tools.sh

# The chart carries copies of the dashboards (helm reads only inside the chart): keep
# them in step, then `make k8s` re-renders the plain manifests that embed them.
dashboards: $(INSTALLED)
	$(PY) scripts/observability/generate.py
	scripts/deploy/sync_dashboards.sh

dashboards-check: $(INSTALLED)
	$(PY) scripts/observability/generate.py --check

rules-check: prometheus
	scripts/observability/check_rules.sh

k8s: $(INSTALLED)
	PYTHON=$(PY) scripts/deploy/install_tools.sh
	scripts/deploy/render_k8s.sh

# The image's dependencies, pinned with hashes, from PyPI alone (not this machine's
# extra indexes or wheel cache). Universal: environment markers stay (async-timeout
# only below Python 3.11.3, say), so one lock fits any CPython 3.11 base image.
lock: $(INSTALLED)
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	  --generate-hashes --native-tls --index-url https://pypi.org/simple \
	  --custom-compile-command "make lock" --quiet --output-file $(LOCK)

lock-check: $(INSTALLED)
	$(PY) scripts/image_lock_check.py pyproject.toml $(LOCK)

image-check: $(INSTALLED)
	PYTHON=$(PY) scripts/image_check.sh

deploy-check: $(INSTALLED)
	PY=$(PY) scripts/deploy/deploy_check.sh

clean:
	rm -rf $(VENV) $(TOOLS) .blueprint .pytest_cache .mypy_cache .ruff_cache bench/results
