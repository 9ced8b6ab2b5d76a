"""A real Prometheus (Debian's `prometheus` package) for tests.

Each one gets a free loopback port, its own config and data directory, scrapes
every second and evaluates rules every second, and is stopped (SIGTERM, then
SIGKILL) when the block ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from blueprint.local.processes import free_port

INSTALL_SCRIPT = "scripts/observability/install_prometheus.sh"


def tool(name: str) -> str:
    """Path of `prometheus` or `promtool`; skips (fails in CI) when it is not installed."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed: run {INSTALL_SCRIPT} (Debian's prometheus package)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI installs it before the tests, so this is a setup bug")
    pytest.skip(reason)


class PromQLError(AssertionError):
    """Prometheus refused a query (a parse error, an unknown function, ...)."""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        request = urllib.request.Request(f"{self.url}/api/v1/{path}?{query}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: the query is bad
            body = json.load(error)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or matrix/scalar, as Prometheus gives it)."""
        data = self.api("query", query=expr)
        result = data["result"]
        return result if data["resultType"] in ("vector", "matrix") else [{"value": result}]

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def active_targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return targets

    def exemplars(self, expr: str, since_seconds: float = 300) -> list[dict[str, Any]]:
        now = time.time()
        found: list[dict[str, Any]] = self.api(
            "query_exemplars", query=expr, start=str(now - since_seconds), end=str(now)
        )
        return found

    def wait_until(self, predicate: Any, what: str, timeout: float = 60.0) -> None:
        """Poll `predicate()` (truthy when done) until it holds, or fail saying `what`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited while waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s")
            time.sleep(0.5)


def config(
    scrape_jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path], interval: str
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in scrape_jobs.items()
        ],
    }


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_prometheus(
    scrape_jobs: Mapping[str, Sequence[str]],
    workdir: Path,
    *,
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
) -> Iterator[Prometheus]:
    """A Prometheus scraping `scrape_jobs` ({job: ["host:port", ...]}) and running `rule_files`."""
    binary = tool("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config(scrape_jobs, rule_files, interval)))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    try:
        prometheus.wait_until(lambda: _ready(prometheus.url), "prometheus ready", timeout=30)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
