"""Snowflake ids on a clock we control: layout, order, overflow and a clock that goes back."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.infra.ids import ClockMovedBackwards, IdParts, Snowflake, compose, decompose
from blueprint.infra.ids.snowflake import (
    EPOCH_MS,
    MAX_SEQUENCE,
    MAX_TIMESTAMP,
    MAX_WORKER_ID,
)

T0 = EPOCH_MS + 1_000_000


class FakeTime:
    """A millisecond clock that only moves when slept on, or when a test moves it."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms
        self.slept: list[float] = []

    def clock(self) -> int:
        return self.now_ms

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_ms += max(1, round(seconds * 1000))


def _snowflake(time: FakeTime, worker_id: int = 7, **kwargs: int) -> Snowflake:
    return Snowflake(worker_id, clock=time.clock, sleep=time.sleep, **kwargs)


async def test_an_id_holds_time_worker_and_sequence() -> None:
    time = FakeTime()
    ids = _snowflake(time, worker_id=513)
    first, second = await ids.next_id(), await ids.next_id()
    assert decompose(first) == IdParts(unix_ms=T0, worker_id=513, sequence=0)
    assert decompose(second) == IdParts(unix_ms=T0, worker_id=513, sequence=1)
    time.now_ms += 5
    assert decompose(await ids.next_id()) == IdParts(unix_ms=T0 + 5, worker_id=513, sequence=0)


@given(
    st.integers(EPOCH_MS, EPOCH_MS + MAX_TIMESTAMP),
    st.integers(0, MAX_WORKER_ID),
    st.integers(0, MAX_SEQUENCE),
)
def test_compose_and_decompose_are_inverse_and_fit_a_signed_bigint(
    unix_ms: int, worker_id: int, sequence: int
) -> None:
    snowflake = compose(unix_ms, worker_id, sequence)
    assert 0 <= snowflake < 2**63
    assert decompose(snowflake) == IdParts(unix_ms, worker_id, sequence)


@given(
    st.tuples(st.integers(EPOCH_MS, EPOCH_MS + MAX_TIMESTAMP), st.integers(0, MAX_SEQUENCE)),
    st.tuples(st.integers(EPOCH_MS, EPOCH_MS + MAX_TIMESTAMP), st.integers(0, MAX_SEQUENCE)),
    st.integers(0, MAX_WORKER_ID),
    st.integers(0, MAX_WORKER_ID),
)
def test_ids_order_by_time_first(
    a: tuple[int, int], b: tuple[int, int], worker_a: int, worker_b: int
) -> None:
    if a[0] != b[0]:
        assert (compose(a[0], worker_a, a[1]) < compose(b[0], worker_b, b[1])) == (a[0] < b[0])


@given(st.lists(st.integers(0, 3), min_size=1, max_size=300))
async def test_ids_strictly_increase_whatever_the_clock_does_in_small_steps(
    steps: list[int],
) -> None:
    # Each step moves the clock 0..3 ms forward or, for 3, 2 ms back.
    time = FakeTime()
    ids = _snowflake(time, max_backwards_ms=10)
    made = []
    for step in steps:
        time.now_ms += -2 if step == 3 else step
        made.append(await ids.next_id())
    assert made == sorted(set(made))


async def test_sequence_overflow_waits_for_the_next_millisecond() -> None:
    time = FakeTime()
    ids = _snowflake(time)
    made = [await ids.next_id() for _ in range(MAX_SEQUENCE + 2)]
    assert decompose(made[MAX_SEQUENCE]) == IdParts(T0, 7, MAX_SEQUENCE)
    assert decompose(made[-1]) == IdParts(T0 + 1, 7, 0)
    assert time.slept == [0.001]
    assert made == sorted(set(made))


async def test_a_small_step_back_is_waited_out_without_repeating_an_id() -> None:
    time = FakeTime()
    ids = _snowflake(time, max_backwards_ms=50)
    before = await ids.next_id()
    time.now_ms -= 30
    after = await ids.next_id()
    assert time.slept == [0.03]  # back at the last millisecond: its next sequence is free
    assert after > before
    assert decompose(after) == IdParts(T0, 7, 1)


async def test_a_large_step_back_is_refused_and_nothing_is_emitted() -> None:
    time = FakeTime()
    ids = _snowflake(time, max_backwards_ms=50)
    last = await ids.next_id()
    time.now_ms -= 5_000
    with pytest.raises(ClockMovedBackwards, match="5000 ms behind"):
        await ids.next_id()
    assert time.slept == []
    time.now_ms += 5_001  # the clock catches up: ids resume, above the last one
    assert await ids.next_id() > last


async def test_ids_start_after_the_previous_holders_mark() -> None:
    time = FakeTime()
    ids = _snowflake(time, after_ms=T0 + 20, max_backwards_ms=100)
    first = await ids.next_id()
    assert decompose(first).unix_ms == T0 + 21


async def test_concurrent_callers_on_one_loop_never_share_an_id() -> None:
    ids = Snowflake(3)  # the real clock and asyncio.sleep
    made = await asyncio.gather(*(ids.next_id() for _ in range(5000)))
    assert len(set(made)) == 5000
    assert {decompose(i).worker_id for i in made} == {3}


@pytest.mark.parametrize(
    ("worker_id", "error"),
    [(-1, ValueError), (1024, ValueError), (True, TypeError), ("1", TypeError)],
)
def test_worker_ids_outside_ten_bits_are_refused(worker_id: object, error: type) -> None:
    with pytest.raises(error, match="worker id"):
        Snowflake(worker_id)  # type: ignore[arg-type]


def test_a_clock_outside_the_id_range_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the id range"):
        compose(EPOCH_MS - 1, 0, 0)
    with pytest.raises(ValueError, match="outside the id range"):
        compose(EPOCH_MS + MAX_TIMESTAMP + 1, 0, 0)


async def test_a_clock_before_the_epoch_makes_no_id() -> None:
    time = FakeTime(EPOCH_MS - 10)
    with pytest.raises(ValueError, match="outside the id range"):
        await _snowflake(time).next_id()


@pytest.mark.parametrize("value", [-1, 2**63, True, 1.5])
def test_decompose_refuses_what_is_not_an_id(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        decompose(value)  # type: ignore[arg-type]
