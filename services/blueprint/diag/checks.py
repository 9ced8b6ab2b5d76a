"""Request limits of the Diagnostics service: what a caller may ask for."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from blueprint.mesh.errors import FieldChecks

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_WORK = timedelta(seconds=60)
MAX_TICKS = 10_000
MAX_TICK_INTERVAL = timedelta(seconds=10)
MAX_ROUTE = 8
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# Codes a caller may ask Fail for: every non-OK gRPC status code.
FAILABLE_CODES = range(1, 17)


def check_echo(payload: str) -> None:
    checks = FieldChecks()
    checks.require(
        len(payload.encode()) <= MAX_PAYLOAD_BYTES, "payload", f"at most {MAX_PAYLOAD_BYTES} bytes"
    )
    checks.raise_if_any()


def check_work(duration: timedelta, kind: int, known_kinds: set[int]) -> None:
    checks = FieldChecks()
    checks.require(timedelta(0) <= duration <= MAX_WORK, "duration", "must be 0 to 60 s")
    checks.require(kind in known_kinds, "kind", "unknown WorkKind")
    checks.raise_if_any()


def check_fail(code: int) -> None:
    checks = FieldChecks()
    checks.require(code in FAILABLE_CODES, "code", "must be a non-OK gRPC status code, 1 to 16")
    checks.raise_if_any()


def check_ticks(count: int, interval: timedelta) -> None:
    checks = FieldChecks()
    checks.require(1 <= count <= MAX_TICKS, "count", f"must be 1 to {MAX_TICKS}")
    checks.require(timedelta(0) <= interval <= MAX_TICK_INTERVAL, "interval", "must be 0 to 10 s")
    checks.raise_if_any()


def check_relay(route: Sequence[str], work: timedelta) -> None:
    checks = FieldChecks()
    checks.require(len(route) <= MAX_ROUTE, "route", f"at most {MAX_ROUTE} hops")
    checks.require(
        all(_SERVICE_NAME.match(name) for name in route),
        "route",
        "each hop is a service name: lowercase letters, digits and '-'",
    )
    checks.require(timedelta(0) <= work <= MAX_WORK, "work", "must be 0 to 60 s")
    checks.raise_if_any()
