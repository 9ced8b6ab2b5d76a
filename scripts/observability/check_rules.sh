#!/usr/bin/env bash
# `make rules-check`: the rules parse, their unit tests pass, the example config is valid.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/observability/install_prometheus.sh
promtool check rules observability/prometheus/rules/*.yaml
promtool test rules observability/prometheus/tests/*.yaml
promtool check config observability/prometheus/prometheus.yml
