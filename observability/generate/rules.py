"""Prometheus recording rules and multiwindow, multi-burn-rate SLO alerts.

`rpc.yaml` records what dashboards and people ask about each method (rates by
code, error ratio, bucket rates and quantiles over 5m). `slo.yaml` records, per
service and per window an alert reads, the share of calls that spent the
availability and the latency budgets, and alerts on them as the Google SRE
workbook's chapter 5 recommends (see `slo.py` for the numbers).
"""

from __future__ import annotations

from typing import Any

from observability.generate import slo
from observability.generate.promql import (
    SERVER_DURATION,
    SERVICE_LABEL,
    le,
    one_of,
    ratio_or_zero,
    selector,
    sum_by,
    with_service,
)
from observability.generate.streaming import streaming_methods

Rule = dict[str, Any]
RuleFile = dict[str, Any]

QUANTILES = (0.5, 0.95, 0.99)
RATE_WINDOW = "5m"  # the per-method recordings: smooth enough for a graph, quick to react

AVAILABILITY_RATIO = "rpc_service:rpc_server_errors:ratio_rate{window}"
LATENCY_RATIO = "rpc_service:rpc_server_slow_calls:ratio_rate{window}"
METHOD_CODE_RATE = f"rpc_service_method_code:rpc_server_calls:rate{RATE_WINDOW}"
METHOD_ERROR_RATIO = f"rpc_service_method:rpc_server_errors:ratio_rate{RATE_WINDOW}"
METHOD_BUCKET_RATE = f"rpc_service_method_le:{SERVER_DURATION}_bucket:rate{RATE_WINDOW}"
METHOD_QUANTILE = f"rpc_service_method:{SERVER_DURATION}:quantile_rate{RATE_WINDOW}"


def _rate(metric: str, window: str, *matchers: str) -> str:
    return f"rate({selector(metric, *matchers)}[{window}])"


def _errors_matcher() -> str:
    return one_of("rpc_response_status_code", slo.SERVER_ERROR_CODES)


def availability_ratio(window: str, labels: tuple[str, ...] = (SERVICE_LABEL,)) -> str:
    """Share of calls that failed through the server's fault, 0 when none did."""
    return ratio_or_zero(
        with_service(_rate(f"{SERVER_DURATION}_count", window, _errors_matcher())),
        with_service(_rate(f"{SERVER_DURATION}_count", window)),
        labels,
    )


def latency_ratio(window: str) -> str:
    """Share of successful unary calls slower than the threshold."""
    unary_ok = (
        'rpc_response_status_code="OK"',
        one_of("rpc_method", streaming_methods(), negate=True),
    )
    fast = with_service(
        _rate(
            f"{SERVER_DURATION}_bucket",
            window,
            f'le="{le(slo.LATENCY_THRESHOLD_SECONDS)}"',
            *unary_ok,
        )
    )
    total = with_service(_rate(f"{SERVER_DURATION}_count", window, *unary_ok))
    return f"1 - (\n  {sum_by([SERVICE_LABEL], fast)}\n  /\n  {sum_by([SERVICE_LABEL], total)}\n)"


def rpc_rules() -> RuleFile:
    method = (SERVICE_LABEL, "rpc_method")
    rules: list[Rule] = [
        {
            "record": METHOD_CODE_RATE,
            "expr": sum_by(
                (*method, "rpc_response_status_code"),
                with_service(_rate(f"{SERVER_DURATION}_count", RATE_WINDOW)),
            ),
        },
        {"record": METHOD_ERROR_RATIO, "expr": availability_ratio(RATE_WINDOW, method)},
        {
            "record": METHOD_BUCKET_RATE,
            "expr": sum_by(
                (*method, "le"), with_service(_rate(f"{SERVER_DURATION}_bucket", RATE_WINDOW))
            ),
        },
    ]
    rules += [
        {
            "record": METHOD_QUANTILE,
            "expr": f"histogram_quantile({q}, {METHOD_BUCKET_RATE})",
            "labels": {"quantile": str(q)},
        }
        for q in QUANTILES
    ]
    return {"groups": [{"name": "blueprint-rpc", "rules": rules}]}


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def _burn_alert(
    name: str, sli: str, ratio: str, objective: float, alert: slo.BurnRateAlert
) -> Rule:
    budget = slo.error_budget(objective)
    threshold = f"({alert.factor:g} * {budget:g})"
    long_ratio = ratio.format(window=alert.long_window)
    short_ratio = ratio.format(window=alert.short_window)
    days_left = 30 / alert.factor
    threshold_ms = f"{slo.LATENCY_THRESHOLD_SECONDS * 1000:g}"
    spent_by = {
        "availability": "failed with server errors",
        "latency": f"that succeeded took longer than {threshold_ms}ms",
    }[sli]
    return {
        "alert": name,
        "expr": f"{long_ratio} > {threshold}\nand\n{short_ratio} > {threshold}",
        "labels": {
            "severity": alert.severity,
            "slo": sli,
            "long_window": alert.long_window,
            "short_window": alert.short_window,
        },
        "annotations": {
            "summary": (
                f"{{{{ $labels.rpc_service }}}} is spending its {sli} error budget "
                f"at {alert.factor:g}x the sustainable rate"
            ),
            "description": (
                f"{{{{ $value | humanizePercentage }}}} of calls {spent_by} over the last "
                f"{alert.long_window} (and still over the last {alert.short_window}); the "
                f"objective allows {_percent(budget)}. At this rate a 30-day error budget "
                f"lasts {days_left:.3g} days."
            ),
        },
    }


def slo_rules() -> RuleFile:
    """One group per objective: its ratios, then the alerts reading them.

    Rules in a group run in order on the same evaluation, so an alert always
    reads ratios of the same instant; across groups it could read a stale one.
    """
    threshold_ms = f"{slo.LATENCY_THRESHOLD_SECONDS * 1000:g}"
    availability: list[Rule] = [
        {"record": AVAILABILITY_RATIO.format(window=w), "expr": availability_ratio(w)}
        for w in slo.WINDOWS
    ]
    availability += [
        _burn_alert(
            "BlueprintAvailabilityBudgetBurn",
            "availability",
            AVAILABILITY_RATIO,
            slo.AVAILABILITY_OBJECTIVE,
            a,
        )
        for a in slo.BURN_RATE_ALERTS
    ]
    latency: list[Rule] = [
        {"record": LATENCY_RATIO.format(window=w), "expr": latency_ratio(w)} for w in slo.WINDOWS
    ]
    latency += [
        _burn_alert(
            "BlueprintLatencyBudgetBurn", "latency", LATENCY_RATIO, slo.LATENCY_OBJECTIVE, a
        )
        for a in slo.BURN_RATE_ALERTS
    ]
    return {
        "groups": [
            {"name": "blueprint-slo-availability", "rules": availability},
            {"name": f"blueprint-slo-latency-{threshold_ms}ms", "rules": latency},
        ]
    }


RULE_FILES = {"rpc.yaml": rpc_rules, "slo.yaml": slo_rules}
