"""The service-level objectives every Blueprint service is held to.

One place for the numbers the recording rules, the alerts and the dashboards'
burn-rate panels share, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

# Availability: the share of calls that did not fail through the server's fault.
AVAILABILITY_OBJECTIVE = 0.999
# Latency: the share of successful unary calls answered within the threshold.
LATENCY_OBJECTIVE = 0.99
LATENCY_THRESHOLD_SECONDS = 0.25

# OpenTelemetry's recommended boundaries for RPC durations; the mesh's histograms
# use exactly these, and the latency threshold must be one of them because the
# slow share is read off that bucket's counter.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

# The gRPC codes that spend the availability budget: the server failed a call it
# should have answered (HTTP's 5xx, in gRPC's own mapping). Every other code is
# the caller's business and spends nothing:
# - INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
#   PERMISSION_DENIED, UNAUTHENTICATED: the request was wrong or not allowed; the
#   server answered correctly, and a bad client must not be able to page us.
# - RESOURCE_EXHAUSTED: rate limits and quotas say it by design (the ratelimit
#   service exists to); overload that hurts shows up as latency or UNAVAILABLE.
# - ABORTED: a concurrency conflict the caller resolves by retrying its
#   read-modify-write, not a failure of the service.
# - CANCELLED: the caller gave up; if it gave up because we were slow, the
#   latency objective is the one that notices.
# An allow-list, so a code nobody thought about does not silently count.
SERVER_ERROR_CODES = (
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
)


@dataclass(frozen=True)
class BurnRateAlert:
    """Fire when both windows burn the budget `factor` times faster than sustainable.

    The long window makes the alert significant (enough budget is gone); the short
    one makes it stop soon after the burn does (Google SRE workbook, chapter 5).
    """

    severity: str
    long_window: str
    short_window: str
    factor: float


BURN_RATE_ALERTS = (
    # 14.4x for 1h spends 2 % of a 30-day budget: someone should look now.
    BurnRateAlert("page", "1h", "5m", 14.4),
    # 6x for 6h spends 5 %: still a page, it will be gone in five days.
    BurnRateAlert("page", "6h", "30m", 6.0),
    # 1x for 3d spends 10 %: on course to miss the objective; a ticket, not a page.
    BurnRateAlert("ticket", "3d", "6h", 1.0),
)


def _seconds(window: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    return int(window[:-1]) * units[window[-1]]


# Every window an alert reads, shortest first; each gets its recorded ratio.
WINDOWS = tuple(
    sorted(
        {w for a in BURN_RATE_ALERTS for w in (a.long_window, a.short_window)},
        key=_seconds,
    )
)


def error_budget(objective: float) -> float:
    """1 - objective, rounded so 0.999 gives 0.001 and not 0.0010000000000000009."""
    return round(1 - objective, 10)


if LATENCY_THRESHOLD_SECONDS not in DURATION_BUCKETS:
    raise ValueError("the latency threshold must be a histogram bucket boundary")
