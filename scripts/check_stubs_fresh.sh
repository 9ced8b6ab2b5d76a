#!/usr/bin/env bash
# Regenerates the stubs into a scratch folder and fails when the committed ones differ.
set -euo pipefail
python=${1:-.venv/bin/python}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" scripts/gen_protos.py --out "$scratch"
status=0
while IFS= read -r -d '' generated; do
  rel=${generated#"$scratch"/}
  if ! cmp -s "$generated" "services/$rel"; then
    echo "stale generated stub: services/$rel (run 'make protos')" >&2
    status=1
  fi
done < <(find "$scratch" -type f -print0)
exit $status
