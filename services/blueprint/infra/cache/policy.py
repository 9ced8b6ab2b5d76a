"""What the cache decides, apart from how it talks to Redis: pure, clock-free functions.

- TTL jitter: each write lives `ttl x (1 ± jitter)`, so keys filled together (a deploy,
  a warm-up) do not all expire in the same second and hit the database together.
- XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
  Prevention", VLDB 2015): a reader recomputes early when `now - δ·β·ln(rand) ≥ expiry`,
  δ being how long the value took to compute. ln(rand) ≤ 0, so the subtracted term
  pushes `now` forward by an exponentially distributed amount scaled by δ: slow values
  are refreshed earlier, and across many readers about one refreshes before expiry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class CachePolicy:
    """How long values live and how loads are shared; defaults are plain cache-aside
    with stampede protection. Stale serving and the near cache are opt-in because they
    trade freshness for load, which each service decides for itself."""

    ttl_seconds: float = 300.0
    jitter: float = 0.1  # ±10 % spreads a cohort's expiries over a fifth of the TTL
    negative_ttl_seconds: float = 30.0  # short: an absent key may be created any moment
    stale_seconds: float = 0.0  # stale-while-revalidate window after expiry; 0: off
    beta: float = 1.0  # XFetch's β; 1 is the paper's optimum, > 1 earlier, 0 off
    lock_ttl_seconds: float = 5.0  # lease of the load lock; renewed while loading
    wait_seconds: float = 10.0  # a caller waits this long for another's load
    poll_initial_seconds: float = 0.005
    poll_max_seconds: float = 0.05
    near_ttl_seconds: float = 0.0  # in-process copy of hot keys; 0: off
    near_max_entries: int = 1024

    def __post_init__(self) -> None:
        _check(self.ttl_seconds > 0, "ttl_seconds must be > 0")
        _check(0 <= self.jitter < 1, "jitter must be in [0, 1)")
        _check(self.negative_ttl_seconds >= 0, "negative_ttl_seconds must be >= 0")
        _check(self.stale_seconds >= 0, "stale_seconds must be >= 0")
        _check(self.beta >= 0, "beta must be >= 0")
        _check(self.lock_ttl_seconds >= 0.01, "lock_ttl_seconds must be >= 0.01")
        _check(self.wait_seconds > 0, "wait_seconds must be > 0")
        _check(
            0 < self.poll_initial_seconds <= self.poll_max_seconds,
            "need 0 < poll_initial_seconds <= poll_max_seconds",
        )
        _check(self.near_ttl_seconds >= 0, "near_ttl_seconds must be >= 0")
        _check(self.near_max_entries >= 1, "near_max_entries must be >= 1")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"CachePolicy: {message}")


def jittered_ttl(ttl: float, jitter: float, rng: random.Random) -> float:
    """`ttl` scaled by a uniform factor in [1 - jitter, 1 + jitter]."""
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0, got {ttl}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    return ttl * (1 + jitter * (2 * rng.random() - 1))


def should_refresh_early(
    *, now: float, delta: float, expiry: float, beta: float, rand: float
) -> bool:
    """XFetch: True when this reader should recompute a still-fresh value.

    `rand` is uniform in (0, 1]; pass `1 - rng.random()` (random() may return 0).
    """
    if not 0 < rand <= 1:
        raise ValueError(f"rand must be in (0, 1], got {rand}")
    if beta == 0 or delta <= 0:
        return now >= expiry
    return now - delta * beta * math.log(rand) >= expiry
