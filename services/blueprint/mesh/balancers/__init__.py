"""Client-side balancers, built by name through documented factory functions.

Selection (which endpoint) and load metric (how busy it is) vary
independently: each balancer names its metric through `new_load`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from blueprint.mesh.balancers.base import NOTHING_EXCLUDED, Balancer
from blueprint.mesh.balancers.consistent_hash import ConsistentHash
from blueprint.mesh.balancers.least_connections import LeastConnections
from blueprint.mesh.balancers.least_response_time import LeastResponseTime
from blueprint.mesh.balancers.load import (
    Clock,
    Ewma,
    ExpectedLatency,
    PeakEwma,
    PendingRequests,
)
from blueprint.mesh.balancers.p2c import P2CPeakEwma
from blueprint.mesh.balancers.p2c_latency import P2CExpectedLatency
from blueprint.mesh.balancers.random_choice import RandomChoice
from blueprint.mesh.balancers.round_robin import RoundRobin
from blueprint.mesh.balancers.weighted_round_robin import WeightedRoundRobin

if TYPE_CHECKING:
    from blueprint.mesh.settings import BalancerName

__all__ = [
    "NOTHING_EXCLUDED",
    "Balancer",
    "ConsistentHash",
    "Ewma",
    "ExpectedLatency",
    "LeastConnections",
    "LeastResponseTime",
    "P2CExpectedLatency",
    "P2CPeakEwma",
    "PeakEwma",
    "PendingRequests",
    "RandomChoice",
    "RoundRobin",
    "WeightedRoundRobin",
    "consistent_hash",
    "least_connections",
    "least_response_time",
    "make_balancer",
    "p2c_expected_latency",
    "p2c_peak_ewma",
    "random_choice",
    "round_robin",
    "weighted_round_robin",
]

# Linkerd's default: about one in-cluster RPC, so an endpoint never yet heard
# from is assumed neither free (and flooded) nor slow (and starved).
DEFAULT_INITIAL_RTT_SECONDS = 0.030


def _rng(rng: random.Random | None) -> random.Random:
    # A private generator per balancer, never the module-global one, so no
    # other code's draws change the picks and tests can seed it.
    return rng if rng is not None else random.Random()


def _clock(clock: Clock | None) -> Clock:
    # Monotonic: a wall-clock step must not make latencies negative.
    return clock if clock is not None else time.monotonic


def round_robin(rng: random.Random | None = None) -> RoundRobin:
    """Each endpoint in turn; it reads neither load nor weight.

    rng: chooses where the rotation starts; default a fresh `random.Random()`,
    so clients that each make few calls still spread them.
    """
    return RoundRobin(_rng(rng))


def weighted_round_robin() -> WeightedRoundRobin:
    """nginx's smooth weighted rotation by `Instance.weight`; the weights are the parameters."""
    return WeightedRoundRobin()


def least_connections(rng: random.Random | None = None) -> LeastConnections:
    """Fewest calls in flight.

    rng: breaks ties; default a fresh `random.Random()`, so idle endpoints
    share the first calls rather than all going to one.
    """
    return LeastConnections(_rng(rng))


def least_response_time(
    decay_seconds: float = 2.0,
    initial_rtt_seconds: float = DEFAULT_INITIAL_RTT_SECONDS,
    rng: random.Random | None = None,
    clock: Clock | None = None,
) -> LeastResponseTime:
    """Lowest average latency x (calls in flight + 1).

    decay_seconds: 2 s: a plain average has no peak rule to catch a slowdown,
        so it must follow a change within seconds, yet still smooth over the
        tens of calls a second a busy client makes.
    initial_rtt_seconds: 30 ms, Linkerd's default: a new endpoint is neither
        free nor slow.
    rng: breaks ties (a fresh `random.Random()` by default).
    clock: `time.monotonic` by default; inject a fake one in tests.
    """
    return LeastResponseTime(decay_seconds, initial_rtt_seconds, _rng(rng), _clock(clock))


def p2c_peak_ewma(
    decay_seconds: float = 1.0,
    initial_rtt_seconds: float = DEFAULT_INITIAL_RTT_SECONDS,
    rng: random.Random | None = None,
    clock: Clock | None = None,
) -> P2CPeakEwma:
    """The cheaper of two random endpoints by peak-EWMA latency x (calls in flight + 1).

    decay_seconds: 1 s, not Finagle's and Linkerd's 10 s. A peak is kept
        for about this long, and with 10 s one scheduling hiccup of a healthy
        replica made it look as slow as a really slow one for ten seconds; in
        bench/balancers (light load, one 10x slow replica of 3) the slow
        replica then kept 0.2-1.6 % of calls, enough to leave p99 at its
        latency, against 0.3-0.4 % with 1 s. The cost of a short memory: a
        slow replica is probed again about once a second, one call at a time.
    initial_rtt_seconds: 30 ms, Linkerd's default: a new endpoint is neither
        free (flooded) nor slow (starved) before its first answer.
    rng: draws the two candidates (a fresh `random.Random()` by default).
    clock: `time.monotonic` by default; inject a fake one in tests.
    """
    return P2CPeakEwma(decay_seconds, initial_rtt_seconds, _rng(rng), _clock(clock))


def p2c_expected_latency(
    decay_seconds: float = 1.0,
    initial_seconds: float = 0.001,
    failure_penalty_seconds: float = 1.0,
    probe_seconds: float = 1.0,
    probe_every: int = 1000,
    rng: random.Random | None = None,
    clock: Clock | None = None,
) -> P2CExpectedLatency:
    """The default: the cheaper of two random endpoints by expected latency, failures
    counted as slow, a shunned endpoint probed now and then (see `ExpectedLatency`).

    decay_seconds: 1 s. The average has no peak rule (one scheduling hiccup of
        a healthy replica no longer makes it look slow for the whole window,
        as it did with Finagle's 10 s), so it must follow a real change within
        about a second; it still spans the hundreds of answers a busy client
        gets in that time. A replica that turns slow shows sooner through its
        growing count of calls in flight.
    initial_seconds: 1 ms per call before the first answer: low, so a new
        replica gets calls at once, and replaced by that first answer.
    failure_penalty_seconds: 1 s: each failed answer counts as at least this
        slow. A replica failing 30 % of its calls then averages about 300 ms
        a call however fast it fails, as Linkerd plans for its P2C.
    probe_seconds, probe_every: a shunned, idle endpoint gets one call when
        it has had no answer for 1 s and no call for 1000 picks: at most 0.1 % of calls
        per endpoint, so probes never reach the p99 (with 1 in 200, at ~230
        calls/s in bench/balancers, the probes alone were 0.4 % of the calls
        and, with the machine's own noise, enough to hold p99 at the slow
        replica's latency). A recovered replica is seen again after about
        three probes: within seconds for a client making a thousand calls a
        second, longer for a quiet one, which loses little by waiting.
    rng: draws the two candidates (a fresh `random.Random()` by default).
    clock: `time.monotonic` by default; inject a fake one in tests.
    """
    return P2CExpectedLatency(
        decay_seconds,
        initial_seconds,
        failure_penalty_seconds,
        probe_seconds,
        probe_every,
        _rng(rng),
        _clock(clock),
    )


def consistent_hash(virtual_nodes: int = 160, rng: random.Random | None = None) -> ConsistentHash:
    """Key affinity on a hash ring.

    virtual_nodes: points per unit of weight; 160 as in ketama (libmemcached):
        each endpoint's share of keys then varies by roughly 1/sqrt(160), about
        8 %, while the ring of a few dozen endpoints stays a few thousand ints.
    rng: chooses for calls that carry no key (a fresh `random.Random()` by default).
    """
    return ConsistentHash(virtual_nodes, _rng(rng))


def random_choice(rng: random.Random | None = None) -> RandomChoice:
    """Uniform random; rng defaults to a fresh `random.Random()`."""
    return RandomChoice(_rng(rng))


_FACTORIES: dict[str, Callable[[random.Random | None, Clock | None], Balancer]] = {
    "round_robin": lambda rng, clock: round_robin(rng),
    "weighted_round_robin": lambda rng, clock: weighted_round_robin(),
    "least_connections": lambda rng, clock: least_connections(rng=rng),
    "least_response_time": lambda rng, clock: least_response_time(rng=rng, clock=clock),
    "p2c_peak_ewma": lambda rng, clock: p2c_peak_ewma(rng=rng, clock=clock),
    "p2c_expected_latency": lambda rng, clock: p2c_expected_latency(rng=rng, clock=clock),
    "consistent_hash": lambda rng, clock: consistent_hash(rng=rng),
    "random": lambda rng, clock: random_choice(rng=rng),
}


def make_balancer(
    name: BalancerName,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] | None = None,
) -> Balancer:
    """The balancer called `name`, with its factory's defaults."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"unknown balancer {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    return factory(rng, clock)
