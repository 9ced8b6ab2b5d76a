"""Retry backoff: delays grow by the multiplier within the jitter, until the cap."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.infra.queue import RetryPolicy


@given(
    base=st.floats(min_value=0.001, max_value=60),
    multiplier=st.floats(min_value=1.1, max_value=10),
    jitter_share=st.floats(min_value=0, max_value=0.999),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_each_delay_is_longer_than_the_last_until_the_cap(
    base: float, multiplier: float, jitter_share: float, seed: int
) -> None:
    ceiling = (multiplier - 1) / (multiplier + 1)
    policy = RetryPolicy(
        base_seconds=base,
        multiplier=multiplier,
        max_seconds=base * multiplier**12,
        jitter=ceiling * jitter_share,
        max_deliveries=10,
    )
    rng = random.Random(seed)
    delays = [policy.delay(n, rng) for n in range(1, 11)]
    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    for n, delay in enumerate(delays, start=1):
        nominal = base * multiplier ** (n - 1)
        assert (
            nominal * (1 - policy.jitter) * 0.999 <= delay <= nominal * (1 + policy.jitter) * 1.001
        )


def test_delays_stop_growing_at_the_cap() -> None:
    policy = RetryPolicy(base_seconds=1, max_seconds=10, jitter=0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(10_000, rng) == 10  # no overflow far past the cap


def test_exhausted_after_max_deliveries() -> None:
    policy = RetryPolicy(max_deliveries=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    with pytest.raises(ValueError, match="start at 1"):
        policy.delay(0, random.Random(1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_seconds": 0}, "base_seconds"),
        ({"multiplier": 1.0}, "multiplier"),
        ({"base_seconds": 10, "max_seconds": 5}, "max_seconds"),
        ({"jitter": 0.34}, "jitter must be in \\[0, 0.333\\)"),
        ({"multiplier": 3, "jitter": 0.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"max_deliveries": 0}, "max_deliveries"),
    ],
)
def test_bad_policies_are_refused_by_name(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**options)  # type: ignore[arg-type]
