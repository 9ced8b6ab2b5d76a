#!/usr/bin/env bash
# A Prometheus for `make run` (start that first, in another shell): scrapes every
# replica discovery knows, runs the SLO rules, serves http://127.0.0.1:9090.
# Ctrl-C stops it. Data lives in .blueprint/prometheus/.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PY:-.venv/bin/python}
port=${PROMETHEUS_PORT:-9090}
state=.blueprint/prometheus
mkdir -p "$state"
scripts/observability/install_prometheus.sh
"$py" scripts/observability/prometheus_targets.py --out "$state/targets.json" --watch 2 &
targets=$!
trap 'kill "$targets" 2>/dev/null || true' EXIT
echo "prometheus: http://127.0.0.1:$port (targets: $state/targets.json)" >&2
prometheus \
  --config.file=observability/prometheus/prometheus.yml \
  --storage.tsdb.path="$state/data" \
  --web.listen-address="127.0.0.1:$port" \
  --enable-feature=exemplar-storage \
  --log.level=warn
