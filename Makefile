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

.PHONY: run test test-unit test-e2e protos protos-check lint format bench clean k8s deploy-check image-check prometheus dashboards dashboards-check rules-check lock lock-check

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@1

run: $(INSTALLED)
	$(VENV)/bin/blueprint up

# Prometheus (Debian's package) is installed too: the observability tests run a real one.
test: $(INSTALLED) prometheus
	$(PY) -m pytest

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

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(INSTALLED)
	$(PY) -m bench

prometheus:
	scripts/observability/install_prometheus.sh

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
