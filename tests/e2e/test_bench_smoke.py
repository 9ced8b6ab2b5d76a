"""`make bench` keeps working: a quick run of both benchmarks writes their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_quick_benchmarks_print_tables_and_write_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    env["BLUEPRINT_BENCH_RESULTS"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mesh (round_robin) / raw throughput" in result.stdout
    assert "p99(p2c_expected_latency) / p99(round_robin)" in result.stdout
    assert "Default balancer (p2c_expected_latency) vs its goals" in result.stdout

    overhead = json.loads((tmp_path / "mesh_overhead.json").read_text())
    balancers = json.loads((tmp_path / "balancers.json").read_text())
    assert overhead["machine"]["cpu_count"] >= 1
    (level,) = balancers["figures"]["sleep_slow"].values()
    assert set(level["algorithms"]) >= {"round_robin", "p2c_expected_latency", "consistent_hash"}
    for figures in level["algorithms"].values():
        assert figures["errors"] == 0 and figures["calls"] > 0
    goals = balancers["figures"]["goals"]
    assert {"sleep_slow_concurrency_4_p99_ratio", "failing_concurrency_4_share"} <= set(goals)

    clicks = json.loads((tmp_path / "shortener.json").read_text())["figures"]["clicks"]
    assert "Clicks: one click worker vs the Resolve calls" in result.stdout
    assert clicks["resolve_calls_per_second_per_replica"] > 0
    assert clicks["worker_clicks_per_second_batched"] > 0
