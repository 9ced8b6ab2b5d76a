"""The data path's dashboards: caches and queues (any service's), and the shortener.

Metric names are those `blueprint.infra.cache.metrics`, `blueprint.infra.queue.metrics`
and `blueprint.shortener.app` export (the tests check each name against them). Queue
depth gauges are sampled by every worker of a queue, so they are read with `max`.
"""

from __future__ import annotations

from blueprint.shortener.clicks import CLICK_STREAM
from observability.generate.grafana import (
    Json,
    Query,
    Row,
    dashboard,
    dashboard_link,
    query_variable,
    stat,
    timeseries,
)
from observability.generate.promql import SERVER_DURATION, ratio_or_zero, selector, sum_by

RI = "$__rate_interval"
DATA_UID = "blueprint-caches-queues"
SHORTENER_UID = "blueprint-shortener"
OVERVIEW_UID = "blueprint-mesh-overview"

LOOKUPS = "blueprint_cache_lookups_total"
LOADS = "blueprint_cache_loads_total"
LOAD_DURATION = "blueprint_cache_load_duration_seconds"
LOCKS = "blueprint_cache_stampede_locks_total"
QUEUE_OUTCOMES = ("processed", "retried", "dead_lettered", "duplicate", "claimed", "failed")
QUEUE_LAG = "blueprint_queue_lag_seconds"
HANDLER_DURATION = "blueprint_queue_handler_duration_seconds"
BATCH = "blueprint_queue_batch_messages"
SPLITS = "blueprint_queue_batch_splits_total"
BACKLOG = "blueprint_queue_backlog"
PENDING = "blueprint_queue_pending"
DELAYED = "blueprint_queue_delayed"
DEAD_LETTERS = "blueprint_queue_dead_letters"
OLDEST_AGE = "blueprint_queue_oldest_message_age_seconds"
STORE_READS = "blueprint_shortener_store_reads_total"
CLICKS_DROPPED = "blueprint_shortener_clicks_dropped_total"
PURGED = "blueprint_shortener_purged_total"

SHORTENER = "blueprint.shortener.v1.Shortener"
LINKS_CACHE = "shortener_links"  # the name app.py gives the links' cache
OK = 'rpc_response_status_code="OK"'
NEAR = 'result="near"'
LINK_READS = 'what="link"'


def _rate(metric: str, *matchers: str) -> str:
    return f"rate({selector(metric, *matchers)}[{RI}])"


def _quantile(q: float, metric: str, by: tuple[str, ...], *matchers: str) -> str:
    return f"histogram_quantile({q}, {sum_by((*by, 'le'), _rate(f'{metric}_bucket', *matchers))})"


def _outcome(outcome: str) -> str:
    return f"blueprint_queue_messages_{outcome}_total"


def _depth(metric: str, by: tuple[str, ...], *matchers: str) -> str:
    """A sampled gauge, once per queue however many workers sample it."""
    return sum_by(by, f"max by ({', '.join((*by, 'priority'))}) ({selector(metric, *matchers)})")


def _max_by(metric: str, by: tuple[str, ...], *matchers: str) -> str:
    return f"max by ({', '.join(by)}) ({selector(metric, *matchers)})"


def _method(name: str) -> str:
    return f'rpc_method="{SHORTENER}/{name}"'


# -- caches and queues ------------------------------------------------------------------


def _cache_row(chosen: str) -> Row:
    return Row(
        "Caches",
        [
            timeseries(
                "Lookups/s by tier",
                "Where reads were answered: near (in-process), hit (Redis), stale (served "
                "while refreshing), negative (a cached 'absent'), or miss (loaded).",
                Query(sum_by(["cache", "result"], _rate(LOOKUPS, chosen)), "{{cache}} {{result}}"),
                unit="reqps",
                stacked=True,
            ),
            timeseries(
                "Hit ratio",
                "Reads answered without loading, near cache included.",
                Query(
                    ratio_or_zero(
                        _rate(LOOKUPS, chosen, 'result!="miss"'), _rate(LOOKUPS, chosen), ["cache"]
                    ),
                    "{{cache}}",
                ),
                unit="percentunit",
                maximum=1,
            ),
            timeseries(
                "Negative hits/s",
                "Reads of keys known to be absent, answered from the cache: "
                "lookups of missing keys that did not reach the database.",
                Query(sum_by(["cache"], _rate(LOOKUPS, chosen, 'result="negative"')), "{{cache}}"),
                unit="reqps",
            ),
            timeseries(
                "Stampede lock/s by outcome",
                "The cross-process load lock: acquired (this caller loads), waited (another "
                "caller's result used instead of a second load), timed_out, busy (a refresh "
                "already running). Many waited per acquired: a stampede absorbed.",
                Query(sum_by(["cache", "outcome"], _rate(LOCKS, chosen)), "{{cache}} {{outcome}}"),
                unit="reqps",
            ),
            timeseries(
                "Loads/s by reason",
                "Loader runs: miss, early (XFetch refresh before expiry), stale "
                "(stale-while-revalidate).",
                Query(sum_by(["cache", "reason"], _rate(LOADS, chosen)), "{{cache}} {{reason}}"),
                unit="reqps",
            ),
            timeseries(
                "Load p99",
                "How long loaders (the database, behind the cache) took.",
                Query(_quantile(0.99, LOAD_DURATION, ("cache",), chosen), "{{cache}}"),
                unit="s",
            ),
        ],
    )


def _queue_rows(chosen: str) -> list[Row]:
    depth = Row(
        "Queues: depth and lag",
        [
            timeseries(
                "Backlog",
                "Messages in the ready streams (pending ones included): what the "
                "consumers have yet to finish. Sampled by the workers.",
                Query(_depth(BACKLOG, ("stream",), chosen), "{{stream}}"),
            ),
            timeseries(
                "Pending",
                "Delivered to a consumer and not yet acknowledged: being handled, or held "
                "by a consumer that died (taken over after the visibility timeout).",
                Query(_max_by(PENDING, ("stream", "group"), chosen), "{{stream}} {{group}}"),
            ),
            timeseries(
                "Oldest message age",
                "How long the oldest ready message has waited since it was published: "
                "the consumers' lag. Grows without bound when they cannot keep up.",
                Query(_max_by(OLDEST_AGE, ("stream",), chosen), "{{stream}}"),
                unit="s",
            ),
            timeseries(
                "Publish to commit",
                "Time from a message's first publish to its handler's commit (retries "
                "included), per committed message.",
                *[
                    Query(_quantile(q, QUEUE_LAG, ("stream",), chosen), f"{{{{stream}}}} {name}")
                    for q, name in ((0.5, "p50"), (0.99, "p99"))
                ],
                unit="s",
            ),
            timeseries(
                "Retries waiting",
                "Failed messages in the delayed set, waiting for their backoff to end.",
                Query(_max_by(DELAYED, ("stream",), chosen), "{{stream}}"),
            ),
            timeseries(
                "Dead letters",
                "Messages in the dead-letter stream: failed for good, waiting for a human.",
                Query(_max_by(DEAD_LETTERS, ("stream",), chosen), "{{stream}}"),
                thresholds=[(1, "red")],
            ),
        ],
    )
    flow = Row(
        "Queues: outcomes and handlers",
        [
            timeseries(
                "Messages/s by outcome",
                "processed (committed), retried, dead_lettered, duplicate (redelivered after "
                "a commit, acknowledged unrun), claimed (taken over), failed (handler runs).",
                *[
                    Query(
                        sum_by(["stream"], _rate(_outcome(outcome), chosen)),
                        f"{{{{stream}}}} {outcome}",
                    )
                    for outcome in QUEUE_OUTCOMES
                ],
                unit="reqps",
                width=12,
            ),
            timeseries(
                "Retries/s and dead letters/s",
                "Failures scheduled for another try, and messages given up on.",
                Query(sum_by(["stream"], _rate(_outcome("retried"), chosen)), "{{stream}} retried"),
                Query(
                    sum_by(["stream"], _rate(_outcome("dead_lettered"), chosen)),
                    "{{stream}} dead-lettered",
                ),
                unit="reqps",
                width=12,
            ),
            timeseries(
                "Messages per handler run",
                "Mean batch: 1 for a plain handler; near the batch size under load for a "
                "batch handler (one transaction per batch).",
                Query(
                    f"{sum_by(['stream'], _rate(f'{BATCH}_sum', chosen))}\n/\n"
                    f"{sum_by(['stream'], _rate(f'{BATCH}_count', chosen))}",
                    "{{stream}}",
                ),
            ),
            timeseries(
                "Handler run p99",
                "One handler run: one message, or one batch.",
                Query(_quantile(0.99, HANDLER_DURATION, ("stream",), chosen), "{{stream}}"),
                unit="s",
            ),
            timeseries(
                "Batch splits/s",
                "Batches that failed and were split in two to isolate the failing messages.",
                Query(sum_by(["stream"], _rate(SPLITS, chosen)), "{{stream}}"),
                unit="reqps",
            ),
        ],
    )
    return [depth, flow]


def caches_and_queues() -> Json:
    variables = [
        query_variable(
            "cache",
            "Cache",
            f"label_values({LOOKUPS}, cache)",
            include_all=True,
            description="A cache, by the name its service gives it",
        ),
        query_variable(
            "stream",
            "Queue",
            f"label_values({PENDING}, stream)",
            include_all=True,
            description="A work queue (stream), as its workers report it",
        ),
    ]
    return dashboard(
        uid=DATA_UID,
        title="Blueprint / Caches and queues",
        description="Where reads are answered and how stampedes are absorbed; how deep "
        "the work queues are, how far behind their consumers run, and what fails.",
        variables=variables,
        rows=[_cache_row('cache=~"$cache"'), *_queue_rows('stream=~"$stream"')],
        links=[
            dashboard_link("Mesh overview", OVERVIEW_UID, keep_vars=False),
            dashboard_link("Shortener", SHORTENER_UID, keep_vars=False),
        ],
    )


# -- the shortener ----------------------------------------------------------------------


def _calls(method: str, *matchers: str) -> str:
    return f"sum({_rate(f'{SERVER_DURATION}_count', _method(method), *matchers)})"


def shortener() -> Json:
    links = f'cache="{LINKS_CACHE}"'
    clicks = f'stream="{CLICK_STREAM}"'
    glance = Row(
        "Shortener at a glance",
        [
            stat(
                "Shortens/s",
                "Shorten calls answered OK.",
                Query(_calls("Shorten", OK)),
                unit="reqps",
            ),
            stat(
                "Resolves/s",
                "Resolve calls answered OK.",
                Query(_calls("Resolve", OK)),
                unit="reqps",
            ),
            stat(
                "Near-cache share",
                "Link lookups answered in-process, without Redis or the database.",
                Query(f"sum({_rate(LOOKUPS, links, NEAR)})\n/\nsum({_rate(LOOKUPS, links)})"),
                unit="percentunit",
            ),
            stat(
                "Click lag p99",
                "From Resolve publishing a click to the worker counting it.",
                Query(_quantile(0.99, QUEUE_LAG, (), clicks)),
                unit="s",
                thresholds=[(60, "orange"), (300, "red")],
            ),
            stat(
                "Clicks waiting",
                "Clicks published and not yet counted.",
                Query(f"sum({_depth(BACKLOG, ('stream',), clicks)})"),
            ),
            stat(
                "Clicks dropped/s",
                "Clicks Resolve could not publish (overload, Redis away): never counted.",
                Query(f"sum({_rate(CLICKS_DROPPED)})"),
                unit="reqps",
                thresholds=[(0.001, "red")],
            ),
        ],
    )
    traffic = Row(
        "Shortens and resolves",
        [
            timeseries(
                "Shortens/s by status code",
                "Shorten answers; ALREADY_EXISTS is an alias taken, RESOURCE_EXHAUSTED a limit.",
                Query(
                    sum_by(
                        ["rpc_response_status_code"],
                        _rate(f"{SERVER_DURATION}_count", _method("Shorten")),
                    ),
                    "{{rpc_response_status_code}}",
                ),
                unit="reqps",
                stacked=True,
            ),
            timeseries(
                "Link lookups/s by tier",
                "Where Resolve (and GetLink) found the link: near cache, Redis (hit, stale), "
                "a cached absence (negative), or the database (its reads, writer or replica).",
                Query(sum_by(["result"], _rate(LOOKUPS, links, 'result!="miss"')), "{{result}}"),
                Query(f"sum({_rate(STORE_READS, LINK_READS)})", "database"),
                unit="reqps",
                stacked=True,
            ),
            timeseries(
                "Resolve p99",
                "Server-side duration of Resolve.",
                Query(_quantile(0.99, SERVER_DURATION, (), _method("Resolve")), "p99"),
                unit="s",
            ),
        ],
    )
    clicks_row = Row(
        "Clicks",
        [
            timeseries(
                "Clicks counted/s vs resolves/s",
                "The worker keeps up when its line follows the resolves'. Both count "
                "retried Resolves with one request id once.",
                Query(_calls("Resolve", OK), "resolves"),
                Query(f"sum({_rate(_outcome('processed'), clicks)})", "clicks counted"),
                unit="reqps",
            ),
            timeseries(
                "Click lag",
                "From publish to counted, per click (p50, p99), and the age of the oldest "
                "click still waiting.",
                Query(_quantile(0.5, QUEUE_LAG, (), clicks), "p50"),
                Query(_quantile(0.99, QUEUE_LAG, (), clicks), "p99"),
                Query(f"max({selector(OLDEST_AGE, clicks)})", "oldest waiting"),
                unit="s",
            ),
            timeseries(
                "Clicks per transaction",
                "Mean batch the worker counts in one transaction per shard.",
                Query(
                    f"sum({_rate(f'{BATCH}_sum', clicks)})\n/\n"
                    f"sum({_rate(f'{BATCH}_count', clicks)})"
                ),
            ),
        ],
    )
    store = Row(
        "Database and cache",
        [
            timeseries(
                "Database reads/s",
                "By what was read and the route it took (writer, or a replica).",
                Query(sum_by(["what", "route"], _rate(STORE_READS)), "{{what}} {{route}}"),
                unit="reqps",
            ),
            timeseries(
                "Link cache stampede locks/s",
                "waited per acquired: callers spared a database read when a hot link expired.",
                Query(sum_by(["outcome"], _rate(LOCKS, links)), "{{outcome}}"),
                unit="reqps",
            ),
            timeseries(
                "Purged per interval",
                "Expired links, pastes, blobs, click receipts and idempotency records removed.",
                Query(sum_by(["kind"], f"increase({PURGED}[{RI}])"), "{{kind}}"),
            ),
        ],
    )
    return dashboard(
        uid=SHORTENER_UID,
        title="Blueprint / Shortener",
        description="The URL shortener: shortens, resolves by the tier that answered, "
        "and the clicks' way through the queue to the stats.",
        variables=[],
        rows=[glance, traffic, clicks_row, store],
        links=[
            dashboard_link("Caches and queues", DATA_UID, keep_vars=False),
            dashboard_link("Mesh overview", OVERVIEW_UID, keep_vars=False),
        ],
    )


DASHBOARDS = {
    "caches-queues.json": caches_and_queues,
    "shortener.json": shortener,
}
