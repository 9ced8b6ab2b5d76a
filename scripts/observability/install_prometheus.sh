#!/usr/bin/env bash
# Installs Debian's `prometheus` package (prometheus and promtool) when either is
# missing; does nothing when both are on PATH. Tests and scripts start their own
# Prometheus on a free port, never the package's service.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "observability: put Prometheus >= 2.42 (prometheus and promtool) on PATH; no apt-get here" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
echo "observability: installing Debian's prometheus package (prometheus, promtool)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
  prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
