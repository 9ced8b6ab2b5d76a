from __future__ import annotations

import math
import random

import grpc
import pytest
from fake_clock import FakeClock
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from blueprint.mesh.errors import overloaded_status
from blueprint.mesh.resilience.retry import (
    STOP,
    RetryBudget,
    RetryPolicy,
    retry_info_delay,
    server_pushback,
    was_shed,
)

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@given(retry=st.integers(1, 30), seed=st.integers(0, 2**32))
def test_full_jitter_stays_within_the_exponential_ceiling(retry: int, seed: int) -> None:
    policy = RetryPolicy(base_seconds=0.01, max_backoff_seconds=0.5, rng=random.Random(seed))
    delay = policy.backoff(retry)
    assert 0 <= delay <= min(0.5, 0.01 * 2 ** (retry - 1))


def test_only_idempotent_calls_with_retryable_codes_and_attempts_left_are_retried() -> None:
    policy = RetryPolicy(max_attempts=3, rng=random.Random(1))
    assert policy.delay_before_retry(UNAVAILABLE, (), idempotent=True, attempts_made=1) is not None
    assert policy.delay_before_retry(UNAVAILABLE, (), idempotent=False, attempts_made=1) is None
    assert policy.delay_before_retry(UNAVAILABLE, (), idempotent=True, attempts_made=3) is None
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT):
        assert policy.delay_before_retry(code, (), idempotent=True, attempts_made=1) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("250", 0.25), (b"0", 0.0), ("-1", STOP), ("soon", STOP), ("", STOP), ("1e3", STOP)],
)
def test_server_pushback_is_honoured_and_a_bad_one_means_stop(
    value: str | bytes, expected: object
) -> None:
    assert server_pushback([("grpc-retry-pushback-ms", value)]) == expected
    policy = RetryPolicy()
    delay = policy.delay_before_retry(
        UNAVAILABLE, [("grpc-retry-pushback-ms", value)], idempotent=True, attempts_made=1
    )
    assert delay == (None if expected is STOP else expected)


def test_no_pushback_header_means_no_opinion() -> None:
    assert server_pushback([("other", "1")]) is None
    assert server_pushback(None) is None


def test_budget_allows_the_floor_then_a_share_of_calls() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=10, clock=clock)
    # Floor: 1/s over a 10 s window = 10 retries with no calls at all.
    assert sum(budget.try_spend() for _ in range(20)) == 10
    for _ in range(100):
        budget.record_call()
    # 100 calls add 20 more.
    assert sum(budget.try_spend() for _ in range(50)) == 20


def test_budget_forgets_traffic_older_than_its_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window_seconds=10, clock=clock)
    for _ in range(100):
        budget.record_call()
    assert sum(budget.try_spend() for _ in range(100)) == 50
    clock.advance(11)
    assert not budget.try_spend()
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()


@given(
    steps=st.lists(st.tuples(st.floats(0, 3), st.integers(0, 20), st.integers(0, 20)), max_size=40)
)
def test_budget_never_allows_more_than_ratio_of_window_calls_plus_floor(
    steps: list[tuple[float, int, int]],
) -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window_seconds=5, clock=clock)
    history: list[tuple[float, str]] = []

    def in_window(kind: str) -> int:
        # The window is the last 5 whole seconds (the budget's slots).
        now = math.floor(clock.now)
        return sum(1 for t, k in history if k == kind and math.floor(t) > now - 5)

    for advance, calls, retries in steps:
        clock.advance(advance)
        for _ in range(calls):
            budget.record_call()
            history.append((clock.now, "call"))
        for _ in range(retries):
            if budget.try_spend():
                history.append((clock.now, "retry"))
                # Whenever a retry is granted, the window holds no more than allowed.
                assert in_window("retry") <= 0.2 * in_window("call") + 5 + 1e-9


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_seconds": 0}, {"base_seconds": 2, "max_backoff_seconds": 1}],
)
def test_bad_policy_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_budget_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio=1.5)
    with pytest.raises(ValueError):
        RetryBudget(window_seconds=0)


def _retry_info(milliseconds: int) -> list[tuple[str, bytes]]:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(milliseconds)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=10, message="in flight", details=[detail])
    return [("grpc-status-details-bin", status.SerializeToString())]


def test_retry_info_is_read_from_the_status_details() -> None:
    assert retry_info_delay(_retry_info(1500)) == 1.5
    assert retry_info_delay([("grpc-status-details-bin", b"\xff not a status")]) is None
    assert retry_info_delay(None) is None


def test_aborted_is_retried_as_told_only_for_a_keyed_call() -> None:
    policy = RetryPolicy(max_attempts=3, rng=random.Random(1))
    aborted, told = grpc.StatusCode.ABORTED, _retry_info(300)
    assert (
        policy.delay_before_retry(aborted, told, idempotent=True, attempts_made=1, keyed=True)
        == 0.3
    )
    assert (
        policy.delay_before_retry(aborted, (), idempotent=True, attempts_made=1, keyed=True) is None
    )
    assert policy.delay_before_retry(aborted, told, idempotent=True, attempts_made=1) is None
    assert (
        policy.delay_before_retry(aborted, told, idempotent=True, attempts_made=3, keyed=True)
        is None
    )


def test_an_unavailable_store_saying_when_to_come_back_is_waited_for() -> None:
    policy = RetryPolicy(max_attempts=3, rng=random.Random(1))
    assert (
        policy.delay_before_retry(UNAVAILABLE, _retry_info(800), idempotent=True, attempts_made=1)
        == 0.8
    )


def _shed_status(milliseconds: int) -> list[tuple[str, bytes]]:
    # What the admission gate answers: mesh.errors.overloaded_status.
    shed = overloaded_status(milliseconds / 1000, limit=4)
    return [(key, value) for key, value in shed.trailing_metadata if isinstance(value, bytes)]


def test_an_overloaded_server_saying_when_to_come_back_is_retried_then() -> None:
    policy = RetryPolicy(max_attempts=3, rng=random.Random(1))
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    told = _retry_info(200)
    assert policy.delay_before_retry(exhausted, told, idempotent=True, attempts_made=1) == 0.2
    # Not idempotent, and the server may have started it (a quota answer): not repeated.
    assert policy.delay_before_retry(exhausted, told, idempotent=False, attempts_made=1) is None
    # No time to come back given: a refusal, not a retry.
    assert policy.delay_before_retry(exhausted, (), idempotent=True, attempts_made=1) is None
    assert policy.delay_before_retry(exhausted, told, idempotent=True, attempts_made=3) is None


def test_a_call_shed_before_it_started_is_retried_even_when_not_idempotent() -> None:
    policy = RetryPolicy(max_attempts=3, rng=random.Random(1))
    shed = _shed_status(300)
    assert was_shed(shed)
    assert not was_shed(_retry_info(300))
    assert (
        policy.delay_before_retry(
            grpc.StatusCode.RESOURCE_EXHAUSTED, shed, idempotent=False, attempts_made=1
        )
        == 0.3
    )
