"""A real Prometheus scraping a running mesh under load.

Two `blueprint serve diag` replicas, a `blueprint serve shortener` and its click worker
(`blueprint work shortener-clicks`) register in Redis; mesh clients in this process
call them (Echo, Work, Ticks, client errors, and a stressed client whose failing calls
exercise retries, the retry budget, breakers, ejection, hedging and the bulkhead;
Shorten and Resolve of links that exist and that do not) and export their own metrics
on a port of this process. A message that is not a click, and a click published twice,
go to the click queue. Prometheus scrapes every process every second and runs the
recording and alerting rules. PromQL over its HTTP API must then answer the questions
the dashboards ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc
from blueprint.infra.queue import Priority, WorkQueue
from blueprint.local.processes import ready_env, wait_ready
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import RedisRegistry
from blueprint.mesh.settings import Settings
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.metrics import Metrics
from blueprint.shortener.clicks import CLICK_GROUP, CLICK_STREAM
from blueprint.shortener.v1 import shortener_pb2
from blueprint.shortener.v1.shortener_pb2_grpc import ShortenerStub
from support.mesh import mesh_env, running
from support.prometheus import Prometheus, running_prometheus, tool
from support.redis_server import delete_prefix

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "observability" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "observability" / "prometheus" / "rules").glob("*.yaml"))
RATE_INTERVAL = "30s"  # what $__rate_interval becomes (Grafana: at least 4 scrape intervals)
SERVICE = "blueprint.diag.v1.Diagnostics"
MIN_SCRAPES = 10  # at the 1 s scrape interval: about ten seconds of load
METHODS = {f"{SERVICE}/{name}" for name in ("Echo", "Work", "Fail", "Ticks")}
SHORTENER = "blueprint.shortener.v1.Shortener"
LINKS = 20
# Queries that may rightly answer nothing in this run: their metrics count events it
# does not cause (each is still run, so it must be valid PromQL, and its metric names
# are checked against the exporting code in test_dashboards.py).
MAY_BE_EMPTY = {
    "caches-queues: Messages/s by outcome [B]": "retried: no click fails for a while",
    "caches-queues: Messages/s by outcome [E]": "claimed: no worker crashes",
    "caches-queues: Retries/s and dead letters/s [A]": "retried: no click fails for a while",
    "caches-queues: Batch splits/s [A]": "the poison message may come alone in its batch",
}

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]


# -- load -----------------------------------------------------------------------------


def _work(milliseconds: int) -> diag_pb2.WorkRequest:
    request = diag_pb2.WorkRequest()
    request.duration.FromMilliseconds(milliseconds)
    return request


class MeshLoad:
    """Callers through the real mesh client, on an event loop of their own thread.

    The main caller is healthy. Three more are built to trip every resilience
    metric: one calls Fail(UNAVAILABLE) with a hair-trigger breaker and ejection
    and a small retry budget; one hedges slow Work calls behind a tiny bulkhead;
    one sends bursts of long Work calls, more than a replica's concurrency limit
    and its queue's patience allow, so that calls are shed and then throttled in the
    client. The main caller also sends Work with a deadline shorter than Work takes:
    the server answers it without running it (expired).
    """

    def __init__(self, redis_url: str, prefix: str, metrics: Metrics) -> None:
        self._redis_url = redis_url
        self._prefix = prefix
        self._metrics = metrics
        self._stop = threading.Event()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _client(self, **overrides: Any) -> tuple[MeshClient, RedisRegistry]:
        settings = Settings(
            discovery="redis",
            redis_url=self._redis_url,
            redis_prefix=self._prefix,
            lease_ttl_seconds=2,
            resync_seconds=0.25,
            **overrides,
        )
        registry = RedisRegistry.from_url(
            self._redis_url, prefix=self._prefix, lease_ttl_seconds=2, resync_seconds=0.25
        )
        provider = tracing.tracer_provider(settings, "observability-test", "load")
        client = MeshClient(
            settings, registry, tracer=tracing.tracer(provider), metrics=self._metrics
        )
        return client, registry

    async def _caller(self, name: str, call: Callable[[], Awaitable[Any]], pause: float) -> None:
        while not self._stop.is_set():
            try:
                await call()
                self.outcomes[name, "OK"] += 1
            except grpc.aio.AioRpcError as error:
                self.outcomes[name, error.code().name] += 1
            await asyncio.sleep(pause)

    async def _caller_of_bursts(self, burst: Callable[[], Awaitable[None]], pause: float) -> None:
        while not self._stop.is_set():
            await burst()
            await asyncio.sleep(pause)

    async def _run(self) -> None:
        main = self._client()
        # Hedged calls skip the retry loop, so retries and hedges need callers of their own.
        retrying = self._client(
            breaker_window=4,
            breaker_open_seconds=1,
            ejection_consecutive_failures=2,
            ejection_base_seconds=1,
            retry_budget_ratio=0.1,
            retry_budget_min_per_second=1,
        )
        hedging = self._client(bulkhead_max_in_flight=2, hedge_after_seconds=0.01)
        bursting = self._client(max_attempts=1)
        try:
            await main[0].wait_for_endpoints("diag", timeout=10)
            diag = main[0].stub("diag", diag_pb2_grpc.DiagnosticsStub)
            flaky = retrying[0].stub("diag", diag_pb2_grpc.DiagnosticsStub)
            hedged = hedging[0].stub("diag", diag_pb2_grpc.DiagnosticsStub)
            burst_stub = bursting[0].stub("diag", diag_pb2_grpc.DiagnosticsStub)

            async def burst() -> None:
                # 3x the start limit (20) per replica, each holding its slot 300 ms: the
                # rest wait past the queue's 100 ms patience and are shed.
                async def one() -> None:
                    try:
                        await burst_stub.Work(_work(300), timeout=2)
                        self.outcomes["burst", "OK"] += 1
                    except grpc.aio.AioRpcError as error:
                        self.outcomes["burst", error.code().name] += 1

                await asyncio.gather(*(one() for _ in range(120)))

            async def ticks() -> None:
                request = diag_pb2.TicksRequest(count=3)
                request.interval.FromMilliseconds(20)
                async for _ in diag.Ticks(request, timeout=5):
                    pass

            def echo() -> Awaitable[Any]:
                return diag.Echo(diag_pb2.EchoRequest(payload="x"), timeout=5)

            def invalid() -> Awaitable[Any]:
                return diag.Fail(diag_pb2.FailRequest(code=3), timeout=5)

            def unavailable() -> Awaitable[Any]:
                return flaky.Fail(diag_pb2.FailRequest(code=14), timeout=1)

            def slow_work() -> Awaitable[Any]:
                return hedged.Work(_work(30), timeout=1)

            await main[0].wait_for_endpoints("shortener", timeout=30)
            shortener = main[0].stub("shortener", ShortenerStub)
            run = uuid.uuid4().hex[:6]
            codes = []
            for n in range(LINKS):
                created = await shortener.Shorten(
                    shortener_pb2.ShortenRequest(
                        url=f"https://example.com/{n}", custom_alias=f"obs{run}{n}"
                    ),
                    timeout=10,
                )
                codes.append(created.link.code)
            rng = random.Random(3)

            def resolve() -> Awaitable[Any]:
                code = rng.choice(codes)
                return shortener.Resolve(shortener_pb2.ResolveRequest(code=code), timeout=5)

            def resolve_missing() -> Awaitable[Any]:  # NOT_FOUND, then negative cache hits
                code = f"missing{rng.randrange(5)}"
                return shortener.Resolve(shortener_pb2.ResolveRequest(code=code), timeout=5)

            def shorten() -> Awaitable[Any]:
                request = shortener_pb2.ShortenRequest(url=f"https://example.com/{run}")
                return shortener.Shorten(request, timeout=5)

            # Pauses keep two cores free enough for the servers and Prometheus.
            await asyncio.gather(
                self._caller("echo", echo, 0.01),
                self._caller("echo", echo, 0.01),
                self._caller("work", lambda: diag.Work(_work(20), timeout=5), 0.01),
                self._caller("too late", lambda: diag.Work(_work(20), timeout=0.005), 0.1),
                self._caller_of_bursts(burst, 1.0),
                self._caller("ticks", ticks, 0.05),
                self._caller("invalid", invalid, 0.05),
                self._caller("unavailable", unavailable, 0.02),
                *[self._caller("hedged", slow_work, 0.005) for _ in range(3)],
                self._caller("resolve", resolve, 0.01),
                self._caller("resolve missing", resolve_missing, 0.1),
                self._caller("shorten", shorten, 0.2),
            )
        finally:
            for client, registry in (main, retrying, hedging, bursting):
                await client.close()
                await registry.close()


# -- the running mesh and its Prometheus ----------------------------------------------


@dataclass
class Observed:
    prometheus: Prometheus
    load: MeshLoad


@dataclass(frozen=True)
class DashboardQuery:
    dashboard: Path
    panel: str
    expr: str  # with its template variables still in

    @property
    def id(self) -> str:
        return f"{self.dashboard.stem}: {self.panel}"


def _dashboard_queries() -> list[DashboardQuery]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        panels = list(board["panels"])
        for panel in list(panels):
            panels += panel.get("panels", [])  # inside collapsed rows
        for panel in panels:
            for target in panel.get("targets", []):
                title = f"{panel['title']} [{target['refId']}]"
                found.append(DashboardQuery(path, title, target["expr"]))
    return found


QUERIES = _dashboard_queries()


def _substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


def _js_regex(literal: str) -> re.Pattern[str]:
    match = re.fullmatch(r"/(.*)/([a-z]*)", literal)
    assert match, f"not a regex literal: {literal}"
    return re.compile(match.group(1))


def resolve_variables(prometheus: Prometheus, board: dict[str, Any]) -> dict[str, str]:
    """Values for the dashboard's variables, found the way Grafana finds them.

    Each `label_values(selector, label)` query runs against the live Prometheus;
    a variable with "All" (its default) takes its all-value, any other the first value.
    """
    values = {"__rate_interval": RATE_INTERVAL}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        definition = _substitute(variable["definition"], values)
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
        assert match, f"unsupported variable query: {definition}"
        options = prometheus.label_values(match.group(2), match.group(1))
        if variable["regex"]:
            pattern = _js_regex(variable["regex"])
            options = sorted(
                {
                    m.group(1) if m.groups() else m.group(0)
                    for o in options
                    if (m := pattern.search(o))
                }
            )
        assert options, f"variable {variable['name']} ({definition}) has no values"
        if variable["name"] == "service":
            assert SERVICE in options, options
            values["service"] = SERVICE
        else:
            values[variable["name"]] = (
                variable["allValue"] if variable["includeAll"] else sorted(options)[0]
            )
    return values


def _all_dashboard_queries_answer(prometheus: Prometheus) -> bool:
    for path in DASHBOARDS:
        try:
            values = resolve_variables(prometheus, json.loads(path.read_text()))
        except AssertionError:
            return False
        for query in QUERIES:
            if query.dashboard != path or query.id in MAY_BE_EMPTY:
                continue
            if not prometheus.query(_substitute(query.expr, values)):
                return False
    return True


def _min_scrapes(prometheus: Prometheus) -> float:
    result = prometheus.query("min(count_over_time(up[1m]))")
    return float(result[0]["value"][1]) if result else 0.0


def _methods_with_rate(prometheus: Prometheus) -> set[str]:
    result = prometheus.query(
        f"sum by (rpc_method) (rate(rpc_server_call_duration_seconds_count[{RATE_INTERVAL}]))"
    )
    return {r["metric"]["rpc_method"] for r in result if float(r["value"][1]) > 0}


@contextlib.contextmanager
def click_worker(env: dict[str, str], log_dir: Path) -> Iterator[int]:
    """`blueprint work shortener-clicks`, running; yields its metrics port."""
    log_path = log_dir / "shortener-clicks.log"
    ready_file = log_dir / "shortener-clicks.ready.json"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "blueprint.cli", "work", "shortener-clicks"],
            env={**env, **ready_env(ready_file), "BLUEPRINT_INSTANCE_ID": "clicks-1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield wait_ready(process, ready_file, log_path, timeout=60).metrics_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _troubled_clicks(redis_url: str, prefix: str) -> None:
    """A message that is not a click (dead-lettered) among clicks of links that do not
    exist (received, not counted), one of them published twice (a duplicate)."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        queue = WorkQueue(redis, prefix=prefix)
        await queue.ensure_group(CLICK_STREAM, CLICK_GROUP)
        click = {"code": "gone", "link_id": 1, "at": "2026-01-01T00:00:00+00:00"}
        for n in (1, 2, 3, 1):
            await queue.publish(CLICK_STREAM, click, priority=Priority.LOW, message_id=f"c{n}")
        await queue.publish(CLICK_STREAM, {"not": "a click"}, priority=Priority.LOW)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def observed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tool("prometheus")
    workdir = tmp_path_factory.mktemp("observability")
    prefix = f"bptest-{uuid.uuid4().hex[:12]}"
    env = mesh_env(
        redis_url,
        prefix,
        BLUEPRINT_STATE_DIR=str(workdir / "state"),
        BLUEPRINT_SHORTENER_PURGE_INTERVAL_SECONDS="1",
        BLUEPRINT_QUEUE_BLOCK_SECONDS="0.2",
        BLUEPRINT_QUEUE_DEPTH_INTERVAL_SECONDS="1",
    )
    migrated = subprocess.run(
        [sys.executable, "-m", "blueprint.cli", "migrate", "shortener"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    client_registry = CollectorRegistry()
    exporter, _ = start_http_server(0, addr="127.0.0.1", registry=client_registry)
    load = MeshLoad(redis_url, prefix, Metrics(client_registry))
    try:
        with (
            running("diag", 2, env, workdir) as servers,
            running("shortener", 1, env, workdir, start_timeout=60) as shorteners,
            click_worker(env, workdir) as worker_metrics_port,
        ):
            asyncio.run(_troubled_clicks(redis_url, prefix))
            load.start()
            jobs = {
                "diag": [f"127.0.0.1:{s.metrics_port}" for s in servers],
                "shortener": [f"127.0.0.1:{s.metrics_port}" for s in shorteners],
                "shortener-clicks": [f"127.0.0.1:{worker_metrics_port}"],
                "mesh-client": [f"127.0.0.1:{exporter.server_port}"],
            }
            try:
                with running_prometheus(
                    jobs, workdir / "prometheus", rule_files=RULE_FILES
                ) as prometheus:
                    prometheus.wait_until(
                        lambda: all(t["health"] == "up" for t in prometheus.active_targets()),
                        "every target scraped",
                    )
                    prometheus.wait_until(
                        lambda: _methods_with_rate(prometheus) >= METHODS,
                        f"positive rates for {sorted(METHODS)}",
                    )
                    # Ten seconds of load in the rate windows, counted in scrapes.
                    prometheus.wait_until(
                        lambda: _min_scrapes(prometheus) >= MIN_SCRAPES,
                        f"{MIN_SCRAPES} scrapes of every target",
                    )
                    # Event counters appear on their first event; give them a bounded
                    # while. Whatever still answers nothing fails its own test below.
                    # (Two minutes: on a machine shared with other work the worker's
                    # first outcomes and depth samples can take a while to arrive.)
                    with contextlib.suppress(AssertionError):
                        prometheus.wait_until(
                            lambda: (
                                _all_dashboard_queries_answer(prometheus)
                                and _click_troubles_seen(prometheus)
                            ),
                            "every dashboard query answering",
                            timeout=120,
                        )
                    yield Observed(prometheus, load)
            finally:
                load.stop()
    finally:
        exporter.shutdown()
        exporter.server_close()
        delete_prefix(redis_url, prefix)


# -- what PromQL must answer ----------------------------------------------------------


def test_per_method_rates_are_positive(observed: Observed) -> None:
    assert _methods_with_rate(observed.prometheus) >= METHODS, observed.load.outcomes


def test_p99_from_our_histograms_is_finite(observed: Observed) -> None:
    for side, by in (("server", "rpc_method"), ("client", "server_address")):
        result = observed.prometheus.query(
            f"histogram_quantile(0.99, sum by ({by}, le) "
            f"(rate(rpc_{side}_call_duration_seconds_bucket[{RATE_INTERVAL}])))"
        )
        p99 = {r["metric"][by]: float(r["value"][1]) for r in result}
        expected = METHODS if side == "server" else {"diag"}
        assert expected <= set(p99), p99
        assert all(math.isfinite(p99[key]) and p99[key] > 0 for key in expected), p99


def test_error_codes_are_labelled_by_name(observed: Observed) -> None:
    result = observed.prometheus.query(
        f"sum by (rpc_response_status_code) "
        f'(rate(rpc_server_call_duration_seconds_count{{rpc_method="{SERVICE}/Fail"}}'
        f"[{RATE_INTERVAL}]))"
    )
    codes = {r["metric"]["rpc_response_status_code"] for r in result}
    assert {"INVALID_ARGUMENT", "UNAVAILABLE"} <= codes


def test_histograms_carry_trace_exemplars(observed: Observed) -> None:
    found = observed.prometheus.exemplars(
        f'rpc_server_call_duration_seconds_bucket{{rpc_method="{SERVICE}/Echo"}}'
    )
    trace_ids = [e["labels"].get("trace_id", "") for series in found for e in series["exemplars"]]
    assert trace_ids, "Prometheus stored no exemplars for the server histogram"
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids), trace_ids[:3]


def test_rules_evaluate_without_errors(observed: Observed) -> None:
    groups = observed.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) > 10
    broken = {r.get("name"): r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken


def test_slo_ratios_are_recorded(observed: Observed) -> None:
    prometheus = observed.prometheus
    for ratio in ("rpc_server_errors", "rpc_server_slow_calls"):
        for window in ("5m", "1h", "3d"):
            name = f"rpc_service:{ratio}:ratio_rate{window}"
            result = prometheus.query(f'{name}{{rpc_service="{SERVICE}"}}')
            assert len(result) == 1, name
            assert 0 <= float(result[0]["value"][1]) <= 1, result
    # The stressed caller's UNAVAILABLE answers are server errors; INVALID_ARGUMENT is not.
    errors = prometheus.query(
        f'rpc_service:rpc_server_errors:ratio_rate5m{{rpc_service="{SERVICE}"}}'
    )
    assert float(errors[0]["value"][1]) > 0


@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_dashboard_query_returns_data(observed: Observed, query: DashboardQuery) -> None:
    values = resolve_variables(observed.prometheus, json.loads(query.dashboard.read_text()))
    expr = _substitute(query.expr, values)
    assert "$" not in expr.replace('"$1"', ""), f"unsubstituted variable in {expr}"
    result = observed.prometheus.query(expr)  # PromQLError if Prometheus refuses it
    if query.id in MAY_BE_EMPTY:
        return
    assert result, f"{query.id} returned no data:\n{expr}\nload: {dict(observed.load.outcomes)}"


def test_every_query_allowed_to_be_empty_is_a_dashboard_query() -> None:
    assert set(MAY_BE_EMPTY) <= {q.id for q in QUERIES}


def _click_troubles(prometheus: Prometheus) -> tuple[float, float]:
    stream = f'stream="{CLICK_STREAM}"'
    dead = prometheus.query(f"max(blueprint_queue_dead_letters{{{stream}}})")
    duplicates = prometheus.query(f"sum(blueprint_queue_messages_duplicate_total{{{stream}}})")
    return (
        float(dead[0]["value"][1]) if dead else 0.0,
        float(duplicates[0]["value"][1]) if duplicates else 0.0,
    )


def _click_troubles_seen(prometheus: Prometheus) -> bool:
    dead, duplicates = _click_troubles(prometheus)
    return dead >= 1 and duplicates >= 1


def test_the_click_queue_shows_its_dead_letter_and_duplicate(observed: Observed) -> None:
    dead, duplicates = _click_troubles(observed.prometheus)
    assert dead >= 1 and duplicates >= 1, (dead, duplicates)
