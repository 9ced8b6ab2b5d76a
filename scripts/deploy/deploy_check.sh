#!/usr/bin/env bash
# `make deploy-check`: everything about the chart that can be checked without a
# cluster, by the real tools.
#   1. helm, kubectl, checkov under .tools/ (installed when missing)
#   2. the chart's dashboard copies match observability/dashboards
#   3. helm lint --strict and helm template over every value set in helm/blueprint/ci/
#   4. every rendered object, and k8s/*.yaml, against the Kubernetes schemas (strict)
#   5. checkov over the same: no failure, every skip with its reason
#   6. k8s/ is what the chart renders now
#   7. pytest tests/deploy: blue-green switch, probes, limits, security, HPAs, schema errors
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PY:-.venv/bin/python}
HELM=.tools/bin/helm
KUBECTL=.tools/bin/kubectl
CHECKOV=.tools/checkov-venv/bin/checkov
KUBERNETES_VALIDATE=$(dirname "$PY")/kubernetes-validate
# kubernetes-validate ships schemas up to 1.37; the chart targets 1.35 (helm v4's client).
K8S_VERSION=1.35.0
CHART=helm/blueprint
NAMESPACE=blueprint

started=$SECONDS
step() { printf '\n== %s\n' "$*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rendered"

step "tools"
PYTHON=$PY scripts/deploy/install_tools.sh
echo "helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), checkov $("$CHECKOV" --version), kubernetes-validate $("$KUBERNETES_VALIDATE" --version)"

step "dashboards copied into the chart are fresh"
scripts/deploy/sync_dashboards.sh --check

step "helm lint --strict, helm template (Kubernetes $K8S_VERSION, namespace $NAMESPACE)"
for values in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  "$HELM" lint --strict --quiet "$CHART" -f "$values" --namespace "$NAMESPACE" \
    --kube-version "$K8S_VERSION"
  "$HELM" template blueprint "$CHART" -f "$values" --namespace "$NAMESPACE" \
    --kube-version "$K8S_VERSION" > "$work/rendered/$name.yaml"
  printf '  %-20s lint ok, %3d objects rendered\n' "$name" "$(grep -c '^kind:' "$work/rendered/$name.yaml")"
done
for file in k8s/*.yaml; do
  cp "$file" "$work/rendered/k8s-$(basename "$file")"
done

step "kubernetes-validate --strict against $K8S_VERSION"
if ! "$KUBERNETES_VALIDATE" --strict --kubernetes-version "$K8S_VERSION" --quiet \
  "$work"/rendered/*.yaml > "$work/validate.log" 2>&1; then
  cat "$work/validate.log"
  exit 1
fi
# No schema ships for the Prometheus Operator's CRDs; anything else unvalidated is an error.
if grep -v 'api version monitoring.coreos.com/' "$work/validate.log" | grep -q .; then
  cat "$work/validate.log"
  echo "kubernetes-validate: warnings above" >&2
  exit 1
fi
echo "  $(cat "$work"/rendered/*.yaml | grep -c '^kind:') objects valid;" \
  "$(grep -c . "$work/validate.log" || true) PodMonitor/ServiceMonitor without a schema (CRDs; tests/deploy checks them)"

step "checkov (kubernetes framework)"
"$CHECKOV" --directory "$work/rendered" --framework kubernetes --skip-download --soft-fail \
  --output json > "$work/checkov.json" 2> "$work/checkov.err" || {
  cat "$work/checkov.err" >&2
  exit 1
}
checkov_ok=0
"$PY" scripts/deploy/checkov_report.py "$work/checkov.json" > "$work/checkov.txt" || checkov_ok=$?
cat "$work/checkov.txt"
((checkov_ok == 0))

step "k8s/ is fresh"
HELM=$HELM scripts/deploy/render_k8s.sh --check

step "pytest tests/deploy"
BLUEPRINT_DEPLOY_CHECK=1 HELM=$HELM "$PY" -m pytest tests/deploy -q -p no:cacheprovider

step "deploy-check passed in $((SECONDS - started))s"
echo "value sets: $(cd "$CHART/ci" && ls -- *-values.yaml | sed 's/-values.yaml//' | paste -sd, - | sed 's/,/, /g')"
cat "$work/checkov.txt"
