"""`make dashboards`: regenerate the Grafana dashboards and the SLO rules.

python scripts/observability/generate.py          # write observability/dashboards, rules
python scripts/observability/generate.py --check  # exit 1 when the committed ones are stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from observability.generate import render


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when committed files differ")
    args = parser.parse_args()
    if args.check:
        problems = render.stale()
        for problem in problems:
            print(f"{problem} (run 'make dashboards')", file=sys.stderr)
        return 1 if problems else 0
    for path in render.write():
        print(f"wrote {path.relative_to(render.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
