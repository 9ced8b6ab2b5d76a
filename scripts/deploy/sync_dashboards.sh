#!/usr/bin/env bash
# Copies observability/dashboards/*.json into helm/blueprint/dashboards/, where
# the chart's templates/dashboards.yaml turns each into a Grafana ConfigMap
# (helm cannot read files outside the chart). Copies whose original is gone
# are removed.
#   sync_dashboards.sh          refresh the copies
#   sync_dashboards.sh --check  change nothing; fail when a copy is missing, stale or extra
set -euo pipefail
cd "$(dirname "$0")/../.."

SRC=observability/dashboards
DST=helm/blueprint/dashboards
mode=${1:-sync}

shopt -s nullglob
sources=("$SRC"/*.json)
copies=("$DST"/*.json)

if [[ $mode == --check ]]; then
  stale=0
  for src in "${sources[@]}"; do
    if ! cmp -s "$src" "$DST/$(basename "$src")"; then
      echo "dashboards: $DST/$(basename "$src") is missing or differs from $src" >&2
      stale=1
    fi
  done
  for copy in "${copies[@]}"; do
    if [[ ! -f $SRC/$(basename "$copy") ]]; then
      echo "dashboards: $copy has no original in $SRC" >&2
      stale=1
    fi
  done
  if ((stale)); then
    echo "dashboards: run scripts/deploy/sync_dashboards.sh (then make k8s)" >&2
    exit 1
  fi
  echo "dashboards: ${#sources[@]} in $DST, all fresh"
  exit 0
fi

mkdir -p "$DST"
for copy in "${copies[@]}"; do
  [[ -f $SRC/$(basename "$copy") ]] || rm -f "$copy"
done
for src in "${sources[@]}"; do
  cp "$src" "$DST/"
done
echo "dashboards: ${#sources[@]} copied to $DST"
