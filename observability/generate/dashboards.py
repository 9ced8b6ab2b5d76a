"""The Blueprint dashboards: mesh overview, one service, mesh resilience; and the data
path's (caches and queues, the shortener) from `datapath.py`.

Every query works on the raw metrics with `$__rate_interval`, so the dashboards
show data without the recording rules; only the SLO rows read recorded ratios.
"""

from __future__ import annotations

from observability.generate import datapath, rules, slo
from observability.generate.grafana import (
    Json,
    Panel,
    Query,
    Row,
    dashboard,
    dashboard_link,
    heatmap,
    query_variable,
    stat,
    state_timeline,
    timeseries,
    value_mapping,
)
from observability.generate.promql import (
    BUILD_INFO,
    CLIENT_DURATION,
    CLIENT_IN_FLIGHT,
    SERVER_DURATION,
    SERVER_IN_FLIGHT,
    SERVICE_OF_METHOD_JS,
    one_of,
    ratio_or_zero,
    selector,
    sum_by,
    with_service,
)

RI = "$__rate_interval"
NOT_OK = 'rpc_response_status_code!="OK"'
SERVER_ERRORS = one_of("rpc_response_status_code", slo.SERVER_ERROR_CODES)
OVERVIEW_UID = "blueprint-mesh-overview"
SERVICE_UID = "blueprint-service"
RESILIENCE_UID = "blueprint-mesh-resilience"
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
BURN_WINDOWS = ("5m", "1h", "6h")


def _rate(metric: str, *matchers: str) -> str:
    return f"rate({selector(metric, *matchers)}[{RI}])"


def _increase(metric: str, *matchers: str) -> str:
    return f"increase({selector(metric, *matchers)}[{RI}])"


def _quantile(q: float, metric: str, by: tuple[str, ...], *matchers: str) -> str:
    return f"histogram_quantile({q}, {sum_by((*by, 'le'), _rate(f'{metric}_bucket', *matchers))})"


def _share(part_matcher: str, by: tuple[str, ...], metric: str, *matchers: str) -> str:
    if not by:
        whole = f"sum({_rate(f'{metric}_count', *matchers)})"
        part = f"sum({_rate(f'{metric}_count', *matchers, part_matcher)})"
        return f"({part} or vector(0)) / {whole}"
    return ratio_or_zero(
        _rate(f"{metric}_count", *matchers, part_matcher), _rate(f"{metric}_count", *matchers), by
    )


def _of_blueprint_processes(expr: str, *, only_serving: str = "") -> str:
    """`expr` per process, kept only for Blueprint processes (or those serving a service).

    Prometheus renames the build-info's own `instance` label to `exported_instance`,
    so the join is on the target labels `job` and `instance`.
    """
    if only_serving:
        keep = f"and on (job, instance) {selector(f'{SERVER_DURATION}_count', only_serving)}"
    else:
        keep = f"* on (job, instance) group_left () {BUILD_INFO}"
    return f"sum by (instance) ({expr} {keep})"


def _burn_rate_panel(sli: str, ratio: str, objective: float, *matchers: str) -> Panel:
    budget = slo.error_budget(objective)
    queries = [
        Query(
            f"{selector(ratio.format(window=w), *matchers)} / {budget:g}",
            f"{{{{rpc_service}}}} {w}",
        )
        for w in BURN_WINDOWS
    ]
    page = next(a for a in slo.BURN_RATE_ALERTS if a.long_window == "1h")
    slow_page = next(a for a in slo.BURN_RATE_ALERTS if a.long_window == "6h")
    return timeseries(
        f"{sli.capitalize()} budget burn rate",
        f"How many times faster than sustainable the {sli} error budget is being spent "
        f"(1 = exactly the budget over 30 days; the objective is {objective * 100:g}%). "
        f"Pages when both the 1h and 5m lines pass {page.factor:g}, or the 6h and 30m "
        f"lines pass {slow_page.factor:g}. From the recording rules.",
        *queries,
        width=12,
        thresholds=[(slow_page.factor, "orange"), (page.factor, "red")],
    )


def mesh_overview() -> Json:
    count = f"{SERVER_DURATION}_count"
    glance = Row(
        "Mesh at a glance",
        [
            stat(
                "Calls/s",
                "Calls every server answered.",
                Query(f"sum({_rate(count)})"),
                unit="reqps",
            ),
            stat(
                "Non-OK share",
                "Calls answered with any code but OK, client errors included.",
                Query(_share(NOT_OK, (), SERVER_DURATION)),
                unit="percentunit",
            ),
            stat(
                "Server-error share",
                f"Calls that spend the availability budget ({', '.join(slo.SERVER_ERROR_CODES)}).",
                Query(_share(SERVER_ERRORS, (), SERVER_DURATION)),
                unit="percentunit",
                thresholds=[(slo.error_budget(slo.AVAILABILITY_OBJECTIVE), "red")],
            ),
            stat(
                "p99 duration",
                "99th percentile of server call duration, all methods.",
                Query(_quantile(0.99, SERVER_DURATION, ())),
                unit="s",
                thresholds=[(slo.LATENCY_THRESHOLD_SECONDS, "red")],
            ),
            stat(
                "Calls in flight",
                "Calls the servers are working on now.",
                Query(f"sum({SERVER_IN_FLIGHT})"),
                unit="short",
            ),
            stat(
                "Processes",
                "Blueprint processes reporting, by version.",
                Query(f"count by (version) ({BUILD_INFO})", "{{version}}"),
                unit="short",
            ),
        ],
    )
    traffic = Row(
        "Traffic",
        [
            timeseries(
                "Calls/s by service",
                "Calls answered, per gRPC service.",
                Query(sum_by(["rpc_service"], with_service(_rate(count))), "{{rpc_service}}"),
                unit="reqps",
                width=8,
            ),
            timeseries(
                "Calls/s by method",
                "Calls answered, per method.",
                Query(sum_by(["rpc_method"], _rate(count)), "{{rpc_method}}"),
                unit="reqps",
                width=8,
            ),
            timeseries(
                "Calls/s by status code",
                "Calls answered, per gRPC status code.",
                Query(
                    sum_by(["rpc_response_status_code"], _rate(count)),
                    "{{rpc_response_status_code}}",
                ),
                unit="reqps",
                width=8,
                stacked=True,
            ),
        ],
    )
    errors = Row(
        "Errors",
        [
            timeseries(
                "Non-OK share by method",
                "Share of each method's calls answered "
                "with a code other than OK, client errors included.",
                Query(_share(NOT_OK, ("rpc_method",), SERVER_DURATION), "{{rpc_method}}"),
                unit="percentunit",
                width=12,
            ),
            timeseries(
                "Server-error share by service",
                "Share of calls that spend the "
                "availability budget: the server's fault, not the caller's.",
                Query(
                    ratio_or_zero(
                        with_service(_rate(count, SERVER_ERRORS)),
                        with_service(_rate(count)),
                        ["rpc_service"],
                    ),
                    "{{rpc_service}}",
                ),
                unit="percentunit",
                width=12,
                thresholds=[(slo.error_budget(slo.AVAILABILITY_OBJECTIVE), "red")],
            ),
        ],
    )
    duration = Row(
        "Duration (server side)",
        [
            timeseries(
                f"{name} duration by method",
                f"{name} of server call duration. Dots are exemplars: click one to open its trace.",
                Query(
                    _quantile(q, SERVER_DURATION, ("rpc_method",)), "{{rpc_method}}", exemplar=True
                ),
                unit="s",
                width=8,
                thresholds=[(slo.LATENCY_THRESHOLD_SECONDS, "red")],
            )
            for q, name in QUANTILES
        ],
    )
    saturation = Row(
        "Saturation",
        [
            timeseries(
                "Server calls in flight by method",
                "Calls being served right now.",
                Query(sum_by(["rpc_method"], SERVER_IN_FLIGHT), "{{rpc_method}}"),
                width=6,
            ),
            timeseries(
                "Client calls in flight by target",
                "Calls this mesh's clients are waiting on, per target service.",
                Query(sum_by(["server_address"], CLIENT_IN_FLIGHT), "{{server_address}}"),
                width=6,
            ),
            timeseries(
                "CPU by process",
                "CPU seconds per second (1 = one core) of each Blueprint process.",
                Query(_of_blueprint_processes(_rate("process_cpu_seconds_total")), "{{instance}}"),
                unit="percentunit",
                width=6,
            ),
            timeseries(
                "Resident memory by process",
                "Resident memory of each Blueprint process.",
                Query(_of_blueprint_processes("process_resident_memory_bytes"), "{{instance}}"),
                unit="bytes",
                width=6,
            ),
        ],
    )
    callers = Row(
        "Callers' view (mesh clients)",
        [
            timeseries(
                "Client calls/s by target",
                "Calls the mesh clients made, per target service as discovery names it.",
                Query(
                    sum_by(["server_address"], _rate(f"{CLIENT_DURATION}_count")),
                    "{{server_address}}",
                ),
                unit="reqps",
                width=8,
            ),
            timeseries(
                "Client non-OK share by target",
                "What callers saw fail, after the mesh's retries.",
                Query(_share(NOT_OK, ("server_address",), CLIENT_DURATION), "{{server_address}}"),
                unit="percentunit",
                width=8,
            ),
            timeseries(
                "Client p99 by target",
                "99th percentile as callers measure it: "
                "server time plus network, queueing and the mesh's retries.",
                Query(
                    _quantile(0.99, CLIENT_DURATION, ("server_address",)),
                    "{{server_address}}",
                    exemplar=True,
                ),
                unit="s",
                width=8,
            ),
        ],
    )
    burn = Row(
        "SLO burn rates",
        [
            _burn_rate_panel("availability", rules.AVAILABILITY_RATIO, slo.AVAILABILITY_OBJECTIVE),
            _burn_rate_panel("latency", rules.LATENCY_RATIO, slo.LATENCY_OBJECTIVE),
        ],
    )
    return dashboard(
        uid=OVERVIEW_UID,
        title="Blueprint / Mesh overview",
        description="Rate, errors, duration and saturation of every Blueprint service.",
        variables=[],
        rows=[glance, traffic, errors, duration, saturation, callers, burn],
        links=[
            dashboard_link("Service", SERVICE_UID),
            dashboard_link("Resilience", RESILIENCE_UID),
        ],
    )


def service_drilldown() -> Json:
    count = f"{SERVER_DURATION}_count"
    of_service = 'rpc_method=~"$service/.*"'
    chosen = (of_service, 'rpc_method=~"$method"', 'instance=~"$instance"')
    client_chosen = (of_service, 'rpc_method=~"$method"')
    variables = [
        query_variable(
            "service",
            "Service",
            f"label_values({count}, rpc_method)",
            regex=SERVICE_OF_METHOD_JS,
            description="The gRPC service, e.g. blueprint.diag.v1.Diagnostics",
        ),
        query_variable(
            "method",
            "Method",
            f"label_values({selector(count, of_service)}, rpc_method)",
            include_all=True,
        ),
        query_variable(
            "instance",
            "Instance",
            f"label_values({selector(count, of_service)}, instance)",
            include_all=True,
            description="The scrape target serving it",
        ),
    ]
    glance = Row(
        "$service at a glance",
        [
            stat(
                "Calls/s", "Calls answered.", Query(f"sum({_rate(count, *chosen)})"), unit="reqps"
            ),
            stat(
                "Non-OK share",
                "Any code but OK.",
                Query(_share(NOT_OK, (), SERVER_DURATION, *chosen)),
                unit="percentunit",
            ),
            stat(
                "Server-error share",
                "The availability budget's errors.",
                Query(_share(SERVER_ERRORS, (), SERVER_DURATION, *chosen)),
                unit="percentunit",
                thresholds=[(slo.error_budget(slo.AVAILABILITY_OBJECTIVE), "red")],
            ),
            stat(
                "p99 duration",
                "99th percentile of server call duration.",
                Query(_quantile(0.99, SERVER_DURATION, (), *chosen)),
                unit="s",
                thresholds=[(slo.LATENCY_THRESHOLD_SECONDS, "red")],
            ),
            stat(
                "Calls in flight",
                "Being served now.",
                Query(f"sum({selector(SERVER_IN_FLIGHT, *chosen)})"),
            ),
            stat(
                "Instances",
                "Instances that have answered this service's calls.",
                Query(f"count(count by (instance) ({selector(count, *chosen)}))"),
            ),
        ],
    )
    traffic = Row(
        "Traffic",
        [
            timeseries(
                "Calls/s by method",
                "",
                Query(sum_by(["rpc_method"], _rate(count, *chosen)), "{{rpc_method}}"),
                unit="reqps",
            ),
            timeseries(
                "Calls/s by status code",
                "",
                Query(
                    sum_by(["rpc_response_status_code"], _rate(count, *chosen)),
                    "{{rpc_response_status_code}}",
                ),
                unit="reqps",
                stacked=True,
            ),
            timeseries(
                "Calls/s by instance",
                "How evenly the callers' balancers spread the load over replicas.",
                Query(sum_by(["instance"], _rate(count, *chosen)), "{{instance}}"),
                unit="reqps",
            ),
        ],
    )
    errors = Row(
        "Errors",
        [
            timeseries(
                "Non-OK share by method",
                "",
                Query(_share(NOT_OK, ("rpc_method",), SERVER_DURATION, *chosen), "{{rpc_method}}"),
                unit="percentunit",
            ),
            timeseries(
                "Non-OK calls/s by code",
                "",
                Query(
                    sum_by(["rpc_response_status_code"], _rate(count, *chosen, NOT_OK)),
                    "{{rpc_response_status_code}}",
                ),
                unit="reqps",
                stacked=True,
            ),
            timeseries(
                "Server-error share by instance",
                "One bad replica stands out here.",
                Query(
                    _share(SERVER_ERRORS, ("instance",), SERVER_DURATION, *chosen), "{{instance}}"
                ),
                unit="percentunit",
            ),
        ],
    )
    duration = Row(
        "Duration",
        [
            timeseries(
                "Duration percentiles",
                "Server call duration. Dots are exemplars.",
                *[
                    Query(_quantile(q, SERVER_DURATION, (), *chosen), name, exemplar=True)
                    for q, name in QUANTILES
                ],
                unit="s",
                width=12,
                thresholds=[(slo.LATENCY_THRESHOLD_SECONDS, "red")],
            ),
            timeseries(
                "p99 by method",
                "",
                Query(
                    _quantile(0.99, SERVER_DURATION, ("rpc_method",), *chosen),
                    "{{rpc_method}}",
                    exemplar=True,
                ),
                unit="s",
                width=12,
            ),
            heatmap(
                "Duration distribution",
                "Calls per bucket of the duration histogram.",
                Query(sum_by(["le"], _rate(f"{SERVER_DURATION}_bucket", *chosen)), "{{le}}"),
                unit="s",
                width=12,
            ),
            timeseries(
                "p99 by instance",
                "A slow replica stands out here.",
                Query(_quantile(0.99, SERVER_DURATION, ("instance",), *chosen), "{{instance}}"),
                unit="s",
                width=12,
            ),
        ],
    )
    serving = f'{of_service}, instance=~"$instance"'
    saturation = Row(
        "Saturation",
        [
            timeseries(
                "Calls in flight by instance",
                "",
                Query(sum_by(["instance"], selector(SERVER_IN_FLIGHT, *chosen)), "{{instance}}"),
            ),
            timeseries(
                "CPU by instance",
                "1 = one core.",
                Query(
                    _of_blueprint_processes(
                        _rate("process_cpu_seconds_total", 'instance=~"$instance"'),
                        only_serving=serving,
                    ),
                    "{{instance}}",
                ),
                unit="percentunit",
            ),
            timeseries(
                "Resident memory by instance",
                "",
                Query(
                    _of_blueprint_processes(
                        selector("process_resident_memory_bytes", 'instance=~"$instance"'),
                        only_serving=serving,
                    ),
                    "{{instance}}",
                ),
                unit="bytes",
            ),
        ],
    )
    shedding = Row(
        "Load shedding",
        [
            timeseries(
                "Calls refused unstarted/s by method",
                "Shed: over the adaptive concurrency limit, answered RESOURCE_EXHAUSTED with "
                "RetryInfo. Expired: the deadline had passed, or was too short for the "
                "method's no-load time, so the handler never ran.",
                Query(
                    sum_by(["rpc_method"], _rate("blueprint_admission_shed_total", *chosen)),
                    "{{rpc_method}} shed",
                ),
                Query(
                    sum_by(["rpc_method"], _rate("blueprint_admission_expired_total", *chosen)),
                    "{{rpc_method}} expired",
                ),
                unit="reqps",
                width=12,
            ),
            timeseries(
                "Concurrency limit by instance",
                "How many calls each instance runs at once before calls wait or are "
                "shed; it falls only while calls queue and run slower than at no load.",
                Query(
                    _of_blueprint_processes(
                        selector("blueprint_admission_limit", 'instance=~"$instance"'),
                        only_serving=serving,
                    ),
                    "{{instance}}",
                ),
                width=12,
            ),
            timeseries(
                "Calls waiting for a slot by instance",
                "",
                Query(
                    _of_blueprint_processes(
                        selector("blueprint_admission_waiting", 'instance=~"$instance"'),
                        only_serving=serving,
                    ),
                    "{{instance}}",
                ),
                width=12,
            ),
            timeseries(
                "Event loop lag by instance",
                "How late the loop runs what is due: past 20 ms it counts as saturated, "
                "and new calls are waiting unseen inside grpc.",
                Query(
                    _of_blueprint_processes(
                        selector("blueprint_admission_loop_lag_seconds", 'instance=~"$instance"'),
                        only_serving=serving,
                    ),
                    "{{instance}}",
                ),
                unit="s",
                width=12,
            ),
            timeseries(
                "Event loop CPU demand by instance",
                "Share of time the loop's thread ran or waited for a core: from 0.75 it "
                "counts as saturated even with timers on time (handlers holding the CPU).",
                Query(
                    _of_blueprint_processes(
                        selector("blueprint_admission_loop_demand_ratio", 'instance=~"$instance"'),
                        only_serving=serving,
                    ),
                    "{{instance}}",
                ),
                unit="percentunit",
                width=12,
            ),
        ],
    )
    callers = Row(
        "Callers' view",
        [
            timeseries(
                "Client calls/s by status code",
                "Outcomes as callers saw them, after the mesh's retries.",
                Query(
                    sum_by(
                        ["rpc_response_status_code"],
                        _rate(f"{CLIENT_DURATION}_count", *client_chosen),
                    ),
                    "{{rpc_response_status_code}}",
                ),
                unit="reqps",
                width=12,
                stacked=True,
            ),
            timeseries(
                "p99: client vs server",
                "The gap is network, queueing and the mesh's retries.",
                Query(_quantile(0.99, CLIENT_DURATION, (), *client_chosen), "client"),
                Query(_quantile(0.99, SERVER_DURATION, (), *client_chosen), "server"),
                unit="s",
                width=12,
            ),
        ],
    )
    burn = Row(
        "SLO burn rates",
        [
            _burn_rate_panel(
                "availability",
                rules.AVAILABILITY_RATIO,
                slo.AVAILABILITY_OBJECTIVE,
                'rpc_service="$service"',
            ),
            _burn_rate_panel(
                "latency", rules.LATENCY_RATIO, slo.LATENCY_OBJECTIVE, 'rpc_service="$service"'
            ),
        ],
    )
    return dashboard(
        uid=SERVICE_UID,
        title="Blueprint / Service",
        description="One gRPC service: its methods, instances, callers and SLO burn.",
        variables=variables,
        rows=[glance, traffic, errors, duration, saturation, shedding, callers, burn],
        links=[
            dashboard_link("Mesh overview", OVERVIEW_UID, keep_vars=False),
            dashboard_link("Resilience", RESILIENCE_UID, keep_vars=False),
        ],
    )


def mesh_resilience() -> Json:
    picks = "blueprint_mesh_picks_total"
    chosen = 'target=~"$target"'
    breaker_state = selector("blueprint_mesh_breaker_state", chosen)
    variables = [
        query_variable(
            "target",
            "Target service",
            "label_values(blueprint_mesh_endpoints, target)",
            include_all=True,
            description="A service the mesh clients call, as discovery names it",
        ),
    ]
    balancing = Row(
        "Balancing and discovery",
        [
            timeseries(
                "Picks/s per endpoint",
                "Attempts the balancers sent to each endpoint (retries and hedges included).",
                Query(
                    sum_by(["target", "endpoint"], _rate(picks, chosen)), "{{target}} {{endpoint}}"
                ),
                unit="reqps",
            ),
            timeseries(
                "Pick share per endpoint",
                "Each endpoint's share of its target's "
                "picks: even for round robin, skewed away from slow replicas for "
                "P2C and least-loaded.",
                Query(
                    f"{sum_by(['target', 'endpoint'], _rate(picks, chosen))}\n/ on (target) "
                    f"group_left ()\n{sum_by(['target'], _rate(picks, chosen))}",
                    "{{target}} {{endpoint}}",
                ),
                unit="percentunit",
                maximum=1,
            ),
            timeseries(
                "Picks/s by balancer",
                "",
                Query(
                    sum_by(["target", "balancer"], _rate(picks, chosen)), "{{target}} {{balancer}}"
                ),
                unit="reqps",
            ),
            timeseries(
                "Endpoints discovered",
                "Endpoints each target has in the clients' view (the most any client sees).",
                Query(
                    f"max by (target) ({selector('blueprint_mesh_endpoints', chosen)})",
                    "{{target}}",
                ),
                unit="short",
            ),
            timeseries(
                "Discovery changes",
                "Changes to the endpoint set, per interval.",
                Query(
                    sum_by(["target"], _increase("blueprint_mesh_discovery_changes_total", chosen)),
                    "{{target}}",
                ),
            ),
            timeseries(
                "Ejections",
                "Outlier ejections per endpoint, per interval.",
                Query(
                    sum_by(
                        ["target", "endpoint"], _increase("blueprint_mesh_ejections_total", chosen)
                    ),
                    "{{target}} {{endpoint}}",
                ),
            ),
        ],
    )
    retries = Row(
        "Retries, hedges and load shedding",
        [
            timeseries(
                "Retries/s by reason",
                "",
                Query(
                    sum_by(["target", "reason"], _rate("blueprint_mesh_retries_total", chosen)),
                    "{{target}} {{reason}}",
                ),
                unit="reqps",
            ),
            timeseries(
                "Retry share of attempts",
                "Retries over all picks; the retry budget "
                "keeps it near its ratio however bad things get.",
                Query(
                    ratio_or_zero(
                        _rate("blueprint_mesh_retries_total", chosen),
                        _rate(picks, chosen),
                        ["target"],
                    ),
                    "{{target}}",
                ),
                unit="percentunit",
            ),
            timeseries(
                "Retry budget exhausted/s",
                "Retries refused because the budget was "
                "spent: the mesh protecting a struggling service from a retry storm.",
                Query(
                    sum_by(
                        ["target"], _rate("blueprint_mesh_retry_budget_exhausted_total", chosen)
                    ),
                    "{{target}}",
                ),
                unit="reqps",
            ),
            timeseries(
                "Hedges/s",
                "Second attempts sent because the first was slow.",
                Query(
                    sum_by(["target"], _rate("blueprint_mesh_hedges_total", chosen)), "{{target}}"
                ),
                unit="reqps",
            ),
            timeseries(
                "Bulkhead rejections/s",
                "Calls refused because too many to the target were already in flight.",
                Query(
                    sum_by(["target"], _rate("blueprint_mesh_bulkhead_rejections_total", chosen)),
                    "{{target}}",
                ),
                unit="reqps",
            ),
            timeseries(
                "Client-throttled calls/s",
                "Calls the client refused itself (adaptive throttling, as in Google's SRE "
                "book) while the target refused or timed out many of those it was sent.",
                Query(
                    sum_by(["target"], _rate("blueprint_mesh_throttled_total", chosen)),
                    "{{target}}",
                ),
                unit="reqps",
            ),
            timeseries(
                "Client calls in flight",
                "",
                Query(f"sum by (server_address) ({CLIENT_IN_FLIGHT})", "{{server_address}}"),
            ),
        ],
    )
    breakers = Row(
        "Circuit breakers",
        [
            state_timeline(
                "Breaker state per endpoint",
                "Closed, half-open (probing) or open (no traffic).",
                Query(
                    f"max by (target, endpoint) ({breaker_state})",
                    "{{target}} {{endpoint}}",
                ),
                width=16,
                mappings=value_mapping(
                    {0: ("closed", "green"), 1: ("half-open", "yellow"), 2: ("open", "red")}
                ),
                minimum=None,
            ),
            timeseries(
                "Open breakers",
                "Endpoints whose breaker is open, per target.",
                Query(
                    f"sum by (target) ({breaker_state} == bool 2)",
                    "{{target}}",
                ),
                width=8,
            ),
            timeseries(
                "Breaker transitions",
                "Transitions per interval, by the state entered.",
                Query(
                    sum_by(
                        ["target", "endpoint", "state"],
                        _increase("blueprint_mesh_breaker_transitions_total", chosen),
                    ),
                    "{{target}} {{endpoint}} → {{state}}",
                ),
                width=24,
            ),
        ],
    )
    return dashboard(
        uid=RESILIENCE_UID,
        title="Blueprint / Mesh resilience",
        description="What the mesh clients do for their callers: balancing, discovery, "
        "retries and their budget, hedging, bulkheads, throttling, circuit breakers, "
        "ejection.",
        variables=variables,
        rows=[balancing, retries, breakers],
        links=[
            dashboard_link("Mesh overview", OVERVIEW_UID, keep_vars=False),
            dashboard_link("Service", SERVICE_UID, keep_vars=False),
        ],
    )


DASHBOARDS = {
    "mesh-overview.json": mesh_overview,
    "service.json": service_drilldown,
    "mesh-resilience.json": mesh_resilience,
    **datapath.DASHBOARDS,
}
