from __future__ import annotations

from datetime import timedelta

import pytest

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
        checks.check_work(timedelta(seconds=-1), kind=9, known_kinds={0, 1, 2})
    assert set(raised.value.violations) == {"duration", "kind"}
    with pytest.raises(InvalidArgument) as raised:
        checks.check_ticks(0, timedelta(seconds=11))
    assert set(raised.value.violations) == {"count", "interval"}
