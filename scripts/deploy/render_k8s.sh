#!/usr/bin/env bash
# Renders the chart with its default values into plain manifests for kubectl
# users (what `make k8s` runs):
#   k8s/blueprint.yaml   everything but the helm test hook, for namespace `blueprint`
#   k8s/monitoring.yaml  the PodMonitor, for clusters with the Prometheus Operator
# The data stores' credentials come from Secrets the user creates (k8s/README.md):
# a rendered generated password would be committed, and differ on every render.
#   render_k8s.sh          sync the dashboards into the chart, then write k8s/
#   render_k8s.sh --check  render to a temporary directory; fail when k8s/ differs (CI)
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM=${HELM:-.tools/bin/helm}
CHART=helm/blueprint
# Pinned, so the output does not depend on which helm renders it.
COMMON=(blueprint "$CHART" --namespace blueprint --kube-version 1.35.0
  --set redis.auth.existingSecret=blueprint-redis
  --set postgresql.auth.existingSecret=blueprint-postgresql)

render() {
  local out=$1 header="# Generated from helm/blueprint with default values by scripts/deploy/render_k8s.sh
# (make k8s). Do not edit: change the chart and re-render."
  { echo "$header"; "$HELM" template "${COMMON[@]}" --skip-tests; } > "$out/blueprint.yaml"
  { echo "$header"; "$HELM" template "${COMMON[@]}" --set monitoring.force=true \
      --show-only templates/monitoring.yaml; } > "$out/monitoring.yaml"
}

if [[ ${1:-} == --check ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  render "$tmp"
  stale=0
  for file in blueprint.yaml monitoring.yaml; do
    if ! diff -u "k8s/$file" "$tmp/$file" > "$tmp/$file.diff"; then
      echo "k8s/$file is stale; run make k8s. Difference (committed -> rendered):" >&2
      head -40 "$tmp/$file.diff" >&2
      stale=1
    fi
  done
  ((stale)) && exit 1
  echo "k8s: blueprint.yaml and monitoring.yaml match the chart"
  exit 0
fi

# The dashboards ConfigMaps are part of the render: refresh their copies first.
scripts/deploy/sync_dashboards.sh
mkdir -p k8s
render k8s
echo "k8s: wrote k8s/blueprint.yaml ($(grep -c '^kind:' k8s/blueprint.yaml) objects) and k8s/monitoring.yaml"
