"""google.protobuf.Duration and Timestamp request fields -> timedelta / datetime, range-checked.

A client may put any int64 in `seconds` and any int32 in `nanos`; protobuf's own
conversions then overflow (OverflowError, an INTERNAL answer) or give nonsense. These
check the numbers against the types' documented ranges first, then against the
method's own bounds, and refuse with a `Refused` that `FieldChecks.check` turns into
INVALID_ARGUMENT naming the field:

    checks = FieldChecks()
    work = checks.check("duration", lambda: wellknown.duration(request.duration,
                                                              at_least=ZERO, at_most=MAX_WORK))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from blueprint.mesh.errors import Refused

# The ranges duration.proto and timestamp.proto document: +-10,000 years, and the
# years 0001 to 9999 (what RFC 3339 can write).
DURATION_MAX_SECONDS = 315_576_000_000
TIMESTAMP_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999
_NANOS_PER_SECOND = 1_000_000_000
_NANOS_PER_MICROSECOND = 1_000


def duration(value: duration_pb2.Duration, *, at_least: timedelta, at_most: timedelta) -> timedelta:
    """`value` as a timedelta (sub-microsecond nanos dropped), if valid and within bounds."""
    seconds, nanos = value.seconds, value.nanos
    if not -DURATION_MAX_SECONDS <= seconds <= DURATION_MAX_SECONDS:
        raise Refused(f"not a valid Duration: seconds beyond +-{DURATION_MAX_SECONDS}")
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        raise Refused(f"not a valid Duration: nanos beyond +-{MAX_NANOS}")
    if (seconds > 0 > nanos) or (seconds < 0 < nanos):
        raise Refused("not a valid Duration: seconds and nanos of opposite signs")
    total = seconds * _NANOS_PER_SECOND + nanos
    if total < _nanoseconds(at_least):
        raise Refused(f"at least {describe(at_least)}")
    if total > _nanoseconds(at_most):
        raise Refused(f"at most {describe(at_most)}")
    return value.ToTimedelta()


def timestamp(
    value: timestamp_pb2.Timestamp,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> datetime:
    """`value` as an aware UTC datetime, if valid and within bounds (None: no bound)."""
    seconds, nanos = value.seconds, value.nanos
    if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS:
        raise Refused("not a valid Timestamp: outside 0001-01-01 to 9999-12-31")
    if not 0 <= nanos <= MAX_NANOS:
        raise Refused(f"not a valid Timestamp: nanos outside 0 to {MAX_NANOS}")
    moment = value.ToDatetime(tzinfo=UTC)
    if not_before is not None and moment < not_before:
        raise Refused(f"not before {not_before.isoformat()}")
    if not_after is not None and moment > not_after:
        raise Refused(f"not after {not_after.isoformat()}")
    return moment


def describe(span: timedelta) -> str:
    """A bound as people write it: "1 s", "60 s", "3650 days", "1.5 s"."""
    if span and span % timedelta(days=1) == timedelta(0):
        return f"{span.days} days" if span.days != 1 else "1 day"
    return f"{span.total_seconds():g} s"


def _nanoseconds(span: timedelta) -> int:
    return (span // timedelta(microseconds=1)) * _NANOS_PER_MICROSECOND
