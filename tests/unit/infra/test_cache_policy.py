"""The cache's pure decisions: TTL jitter bounds, XFetch, and policy validation."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.infra.cache import CachePolicy, jittered_ttl, should_refresh_early


@given(
    ttl=st.floats(min_value=0.001, max_value=1e7),
    jitter=st.floats(min_value=0, max_value=0.999),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_ttl_stays_within_the_fraction(ttl: float, jitter: float, seed: int) -> None:
    life = jittered_ttl(ttl, jitter, random.Random(seed))
    assert ttl * (1 - jitter) * (1 - 1e-12) <= life <= ttl * (1 + jitter) * (1 + 1e-12)


def test_jitter_spreads_a_cohort_over_the_whole_band() -> None:
    rng = random.Random(7)
    lives = [jittered_ttl(100.0, 0.1, rng) for _ in range(2000)]
    assert min(lives) < 91 and max(lives) > 109  # reaches both ends of 90..110
    assert len({round(life) for life in lives}) >= 20  # not a handful of buckets


def test_no_jitter_is_the_ttl_itself() -> None:
    assert jittered_ttl(60.0, 0.0, random.Random(1)) == 60.0


@pytest.mark.parametrize(("ttl", "jitter"), [(0, 0.1), (-1, 0.1), (10, 1.0), (10, -0.1)])
def test_jitter_refuses_nonsense(ttl: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        jittered_ttl(ttl, jitter, random.Random(1))


def test_xfetch_refreshes_when_the_exponential_push_crosses_expiry() -> None:
    # now=90, expiry=100, delta=5, beta=1: refresh iff -5·ln(rand) >= 10 iff rand <= e^-2.
    threshold = math.exp(-2)
    common = {"now": 90.0, "delta": 5.0, "expiry": 100.0, "beta": 1.0}
    assert should_refresh_early(**common, rand=threshold * 0.99)
    assert not should_refresh_early(**common, rand=threshold * 1.01)
    assert not should_refresh_early(**common, rand=1.0)  # ln(1) = 0: only at expiry


def test_xfetch_beta_scales_how_early() -> None:
    common = {"now": 90.0, "delta": 5.0, "expiry": 100.0, "rand": 0.5}  # -ln(0.5) = 0.69
    assert not should_refresh_early(**common, beta=1.0)  # pushes 3.5 s
    assert should_refresh_early(**common, beta=3.0)  # pushes 10.4 s
    assert not should_refresh_early(**common, beta=0.0)  # off: only at expiry


def test_xfetch_slow_values_refresh_earlier() -> None:
    common = {"now": 90.0, "expiry": 100.0, "beta": 1.0, "rand": 0.1}  # -ln(0.1) = 2.3
    assert not should_refresh_early(**common, delta=1.0)
    assert should_refresh_early(**common, delta=5.0)


def test_xfetch_always_refreshes_at_expiry_and_validates_rand() -> None:
    assert should_refresh_early(now=100.0, delta=0.0, expiry=100.0, beta=1.0, rand=1.0)
    for rand in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="rand"):
            should_refresh_early(now=1.0, delta=1.0, expiry=2.0, beta=1.0, rand=rand)


def test_xfetch_refresh_rate_matches_the_exponential_distribution() -> None:
    # P(refresh) = P(-δβ ln U >= gap) = e^(-gap/(δβ)); with gap = δβ that is 1/e.
    rng = random.Random(3)
    hits = sum(
        should_refresh_early(now=0.0, delta=2.0, expiry=2.0, beta=1.0, rand=1 - rng.random())
        for _ in range(20_000)
    )
    assert abs(hits / 20_000 - math.exp(-1)) < 0.02


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ttl_seconds", 0, "ttl_seconds"),
        ("jitter", 1.0, "jitter"),
        ("negative_ttl_seconds", -1, "negative_ttl_seconds"),
        ("stale_seconds", -1, "stale_seconds"),
        ("beta", -0.1, "beta"),
        ("lock_ttl_seconds", 0, "lock_ttl_seconds"),
        ("wait_seconds", 0, "wait_seconds"),
        ("poll_initial_seconds", 0, "poll_initial_seconds"),
        ("poll_max_seconds", 0.001, "poll_initial_seconds"),
        ("near_ttl_seconds", -1, "near_ttl_seconds"),
        ("near_max_entries", 0, "near_max_entries"),
    ],
)
def test_policy_names_the_bad_field(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CachePolicy(**{field: value})
