from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.duration_pb2 import Duration

from blueprint.diag import checks
from blueprint.mesh.errors import InvalidArgument


def test_echo_payload_limit_is_in_bytes_not_characters() -> None:
    checks.check_echo("é" * (checks.MAX_PAYLOAD_BYTES // 2))
    with pytest.raises(InvalidArgument) as raised:
        checks.check_echo("é" * (checks.MAX_PAYLOAD_BYTES // 2 + 1))
    assert set(raised.value.violations) == {"payload"}


@pytest.mark.parametrize("code", [1, 5, 16])
def test_fail_accepts_every_non_ok_code(code: int) -> None:
    checks.check_fail(code)


@pytest.mark.parametrize("code", [0, -3, 17, 1 << 30])
def test_fail_refuses_ok_and_unknown_codes(code: int) -> None:
    with pytest.raises(InvalidArgument):
        checks.check_fail(code)


def test_work_and_ticks_report_all_bad_fields_together() -> None:
    with pytest.raises(InvalidArgument) as raised:
        checks.check_work(Duration(seconds=-1), kind=9, known_kinds={0, 1, 2})
    assert set(raised.value.violations) == {"duration", "kind"}
    with pytest.raises(InvalidArgument) as raised:
        checks.check_ticks(0, Duration(seconds=11))
    assert set(raised.value.violations) == {"count", "interval"}


@pytest.mark.parametrize(
    "duration",
    [
        Duration(seconds=2**63 - 1),
        Duration(seconds=-(2**63)),
        Duration(seconds=1, nanos=-1),
        Duration(nanos=-(2**31)),
        Duration(seconds=60, nanos=1),
    ],
)
def test_durations_out_of_range_name_their_field(duration: Duration) -> None:
    for check, field in [
        (lambda: checks.check_work(duration, 0, {0}), "duration"),
        (lambda: checks.check_ticks(1, duration), "interval"),
        (lambda: checks.check_relay([], duration), "work"),
    ]:
        with pytest.raises(InvalidArgument) as raised:
            check()
        assert set(raised.value.violations) == {field}


@pytest.mark.parametrize("hop", ["diag\x00", "diag\n", "", "Diag", "../diag", "d" * 64, "1diag"])
def test_a_route_entry_that_is_not_a_discovery_name_is_named_by_index(hop: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        checks.check_relay(["diag", hop], Duration())
    assert set(raised.value.violations) == {"route[1]"}


def test_a_long_route_is_one_violation_however_long() -> None:
    with pytest.raises(InvalidArgument) as raised:
        checks.check_relay(["\x00"] * 100_000, Duration())
    assert "route" in raised.value.violations
    assert len(raised.value.violations) <= checks.MAX_ROUTE + 1


def test_checks_hand_back_the_time_to_spend() -> None:
    assert checks.check_work(Duration(seconds=2), 0, {0}) == timedelta(seconds=2)
    assert checks.check_ticks(3, Duration(nanos=10_000_000)) == timedelta(milliseconds=10)
    assert checks.check_relay(["diag", "a-b-1"], Duration()) == timedelta(0)
