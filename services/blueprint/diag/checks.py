"""Request limits of the Diagnostics service: what a caller may ask for."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from google.protobuf import duration_pb2

from blueprint.mesh import wellknown
from blueprint.mesh.errors import FieldChecks

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_WORK = timedelta(seconds=60)
MAX_TICKS = 10_000
MAX_TICK_INTERVAL = timedelta(seconds=10)
MAX_ROUTE = 8
# A discovery name, as BLUEPRINT_REGISTER_AS and the catalogue spell them.
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_NO_TIME = timedelta(0)
# Codes a caller may ask Fail for: every non-OK gRPC status code.
FAILABLE_CODES = range(1, 17)


def check_echo(payload: str) -> None:
    checks = FieldChecks()
    checks.require(
        len(payload.encode()) <= MAX_PAYLOAD_BYTES, "payload", f"at most {MAX_PAYLOAD_BYTES} bytes"
    )
    checks.raise_if_any()


def check_work(duration: duration_pb2.Duration, kind: int, known_kinds: set[int]) -> timedelta:
    """The time to spend."""
    checks = FieldChecks()
    spend = checks.check(
        "duration", lambda: wellknown.duration(duration, at_least=_NO_TIME, at_most=MAX_WORK)
    )
    checks.require(kind in known_kinds, "kind", "unknown WorkKind")
    checks.raise_if_any()
    assert spend is not None
    return spend


def check_fail(code: int) -> None:
    checks = FieldChecks()
    checks.require(code in FAILABLE_CODES, "code", "must be a non-OK gRPC status code, 1 to 16")
    checks.raise_if_any()


def check_ticks(count: int, interval: duration_pb2.Duration) -> timedelta:
    """The pause between ticks."""
    checks = FieldChecks()
    checks.require(1 <= count <= MAX_TICKS, "count", f"must be 1 to {MAX_TICKS}")
    pause = checks.check(
        "interval",
        lambda: wellknown.duration(interval, at_least=_NO_TIME, at_most=MAX_TICK_INTERVAL),
    )
    checks.raise_if_any()
    assert pause is not None
    return pause


def check_relay(route: Sequence[str], work: duration_pb2.Duration) -> timedelta:
    """The time the last hop works."""
    checks = FieldChecks()
    checks.require(len(route) <= MAX_ROUTE, "route", f"at most {MAX_ROUTE} hops")
    for index, name in enumerate(route[:MAX_ROUTE]):
        checks.require(
            _SERVICE_NAME.fullmatch(name) is not None,
            f"route[{index}]",
            "a discovery name: a lowercase letter, then up to 62 lowercase letters, digits or '-'",
        )
    spend = checks.check(
        "work", lambda: wellknown.duration(work, at_least=_NO_TIME, at_most=MAX_WORK)
    )
    checks.raise_if_any()
    assert spend is not None
    return spend
