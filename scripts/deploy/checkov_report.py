"""Summarise checkov's JSON report: counts, every skip with its reason, every failure.

checkov_report.py REPORT.json  -> exit 1 when a check failed or a skip has no reason
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    reports = data if isinstance(data, list) else [data]
    passed, failed, skipped = [], [], []
    for report in reports:
        results = report.get("results", {})
        passed += results.get("passed_checks", [])
        failed += results.get("failed_checks", [])
        skipped += results.get("skipped_checks", [])

    # checkov puts the text after "=" of a checkov.io/skipN annotation here.
    counts = Counter(
        (check["check_id"], (check["check_result"].get("suppress_comment") or "").strip())
        for check in skipped
    )
    unexplained = sorted({check_id for check_id, reason in counts if not reason})

    print(f"checkov: passed {len(passed)}, failed {len(failed)}, skipped {len(skipped)}")
    for (check_id, reason), count in sorted(counts.items(), key=lambda i: (len(i[0][0]), i[0])):
        print(f"  skipped {check_id} x{count}: {reason or '(NO REASON)'}")
    for check in failed:
        where = f"{check.get('file_path', '?')} {check.get('resource', '?')}"
        print(f"  FAILED {check['check_id']} {check.get('check_name', '')}: {where}")
    if unexplained:
        print(f"  skips without a reason: {', '.join(unexplained)}")
    return 1 if failed or unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
