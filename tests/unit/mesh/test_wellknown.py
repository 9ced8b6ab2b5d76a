"""Duration and Timestamp fields: the types' own ranges first, then the method's bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from blueprint.mesh import wellknown
from blueprint.mesh.errors import FieldChecks, InvalidArgument, Refused

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
WIDE = {"at_least": -timedelta(days=4_000_000), "at_most": timedelta(days=4_000_000)}


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        *((s, 0) for s in INT64),
        (315_576_000_001, 0),
        (-315_576_000_001, 0),
        *((0, n) for n in INT32),
        (0, 1_000_000_000),
        (0, -1_000_000_000),
        (5, -1),
        (-5, 1),
    ],
)
def test_durations_outside_the_type_are_refused_whatever_the_bounds(
    seconds: int, nanos: int
) -> None:
    with pytest.raises(Refused, match="not a valid Duration"):
        wellknown.duration(Duration(seconds=seconds, nanos=nanos), **WIDE)


@pytest.mark.parametrize(
    ("seconds", "nanos", "expected"),
    [
        (315_576_000_000, 999_999_999, timedelta(seconds=315_576_000_000, microseconds=999_999)),
        (-315_576_000_000, -999_999_999, -timedelta(seconds=315_576_000_000, microseconds=999_999)),
        (0, -1, timedelta(0)),  # sub-microsecond: dropped toward zero
        (-1, -500_000_000, timedelta(seconds=-1.5)),
    ],
)
def test_durations_at_the_edges_of_the_type_convert(
    seconds: int, nanos: int, expected: timedelta
) -> None:
    assert wellknown.duration(Duration(seconds=seconds, nanos=nanos), **WIDE) == expected


def test_the_methods_bounds_are_inclusive_and_exact_to_the_nanosecond() -> None:
    bounds = {"at_least": timedelta(seconds=1), "at_most": timedelta(seconds=60)}
    assert wellknown.duration(Duration(seconds=1), **bounds) == timedelta(seconds=1)
    assert wellknown.duration(Duration(seconds=60), **bounds) == timedelta(seconds=60)
    with pytest.raises(Refused, match="at most 60 s"):
        wellknown.duration(Duration(seconds=60, nanos=1), **bounds)
    with pytest.raises(Refused, match="at least 1 s"):
        wellknown.duration(Duration(seconds=0, nanos=999_999_999), **bounds)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        *((s, 0) for s in INT64),
        (wellknown.TIMESTAMP_MIN_SECONDS - 1, 0),
        (wellknown.TIMESTAMP_MAX_SECONDS + 1, 0),
        (0, -1),
        (0, 1_000_000_000),
    ],
)
def test_timestamps_outside_years_1_to_9999_are_refused(seconds: int, nanos: int) -> None:
    with pytest.raises(Refused, match="not a valid Timestamp"):
        wellknown.timestamp(Timestamp(seconds=seconds, nanos=nanos))


def test_timestamps_convert_to_utc_and_meet_their_bounds() -> None:
    first = wellknown.timestamp(Timestamp(seconds=wellknown.TIMESTAMP_MIN_SECONDS))
    last = wellknown.timestamp(
        Timestamp(seconds=wellknown.TIMESTAMP_MAX_SECONDS, nanos=999_999_999)
    )
    assert first == datetime(1, 1, 1, tzinfo=UTC)
    assert last == datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(Refused, match="not after 2030-01-01"):
        wellknown.timestamp(Timestamp(seconds=int(now.timestamp()) + 1), not_after=now)
    with pytest.raises(Refused, match="not before 2030-01-01"):
        wellknown.timestamp(Timestamp(seconds=int(now.timestamp()) - 1), not_before=now)


def test_field_checks_name_the_field_a_refusal_came_from() -> None:
    checks = FieldChecks()
    wide = Duration(seconds=2**63 - 1)
    assert checks.check("ttl", lambda: wellknown.duration(wide, **WIDE)) is None
    assert checks.check("ok", lambda: 5) == 5
    with pytest.raises(InvalidArgument) as raised:
        checks.raise_if_any()
    assert list(raised.value.violations) == ["ttl"]


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=1), "1 s"),
        (timedelta(seconds=1.5), "1.5 s"),
        (timedelta(0), "0 s"),
        (timedelta(days=1), "1 day"),
        (timedelta(days=3650), "3650 days"),
    ],
)
def test_bounds_are_described_as_people_write_them(span: timedelta, text: str) -> None:
    assert wellknown.describe(span) == text
