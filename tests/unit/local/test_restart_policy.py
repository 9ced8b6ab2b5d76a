from __future__ import annotations

import pytest

from blueprint.local.supervisor import RestartPolicy


def test_the_wait_doubles_per_failure_in_a_row_up_to_the_cap() -> None:
    policy = RestartPolicy(backoff_seconds=0.5, max_backoff_seconds=3.0, attempts=10)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_it_gives_up_after_the_attempts_in_a_row() -> None:
    policy = RestartPolicy(attempts=3)
    assert not policy.gives_up(2)
    assert policy.gives_up(3)


@pytest.mark.parametrize(
    "arguments",
    [{"backoff_seconds": 0}, {"backoff_seconds": 5, "max_backoff_seconds": 1}, {"attempts": 0}],
)
def test_nonsense_parameters_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**arguments)  # type: ignore[arg-type]
