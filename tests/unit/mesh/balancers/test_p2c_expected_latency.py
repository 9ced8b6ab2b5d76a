"""The default balancer on fake replicas and a fake clock: spread, tail, failures, probes.

Every figure here is simulated (seeded rng, simulated time): selection
logic is tested, never the speed of this machine.
"""

from __future__ import annotations

import random

import grpc
import pytest
from balancer_helpers import FakeClock
from simulation import Replica, members, run

from blueprint.mesh.balancers import make_balancer, p2c_expected_latency
from blueprint.mesh.balancers.load import ExpectedLatency
from blueprint.mesh.balancers.p2c_latency import P2CExpectedLatency
from blueprint.mesh.settings import BalancerName, Settings

FAST, SLOW = 0.002, 0.020


def balancer(seed: int = 0) -> tuple[P2CExpectedLatency, FakeClock]:
    clock = FakeClock()
    return p2c_expected_latency(rng=random.Random(seed), clock=clock), clock


def test_it_is_the_default() -> None:
    assert Settings.model_fields["balancer"].default == "p2c_expected_latency"


# --- spread: a fresh client is not tied to the first endpoint ----------------


@pytest.mark.parametrize(
    "name",
    [
        "p2c_expected_latency",
        "p2c_peak_ewma",
        "least_response_time",
        "least_connections",
        "round_robin",
        "random",
    ],
)
def test_fresh_clients_spread_their_first_call_over_the_endpoints(name: BalancerName) -> None:
    # As 300 runs of `blueprint call`: each a new process with a new
    # balancer, whose endpoints were discovered one after another.
    firsts: dict[str, int] = {"a": 0, "b": 0, "c": 0}
    for seed in range(300):
        clock = FakeClock()
        fresh = make_balancer(name, rng=random.Random(seed), clock=clock)
        replicas = {instance_id: Replica(FAST) for instance_id in firsts}
        found = []
        for endpoint in members(fresh, replicas):
            found.append(endpoint)
            clock.advance(0.5)  # the creation stamps differ, as they do in a real client
        fresh.update(found)
        chosen = fresh.pick()
        assert chosen is not None
        firsts[chosen.instance_id] += 1
    # 100 each expected; the bounds are about 3.5 standard deviations wide.
    assert all(70 <= count <= 130 for count in firsts.values()), firsts


def test_an_unanswered_default_does_not_decay_in_peak_ewma() -> None:
    # The regression: the default decayed from each endpoint's creation, so
    # the oldest looked cheapest and a short-lived client always chose it.
    clock = FakeClock()
    older = make_balancer("p2c_peak_ewma", clock=clock).new_load()
    clock.advance(5.0)
    newer = make_balancer("p2c_peak_ewma", clock=clock).new_load()
    clock.advance(5.0)
    assert older.cost() == newer.cost()


# --- tail: a slow replica gets almost nothing ---------------------------------


@pytest.mark.parametrize("serial", [False, True], ids=["sleeping", "cpu-bound"])
@pytest.mark.parametrize("concurrency", [4, 12])
@pytest.mark.parametrize("seed", range(3))
def test_a_ten_times_slower_replica_gets_under_one_percent(
    serial: bool, concurrency: int, seed: int
) -> None:
    chosen, clock = balancer(seed)
    replicas = {
        "fast-1": Replica(FAST, serial=serial),
        "fast-2": Replica(FAST, serial=serial),
        "slow": Replica(SLOW, serial=serial),
    }
    outcome = run(chosen, clock, replicas, concurrency=concurrency, calls=6000, seed=seed)
    assert outcome.share("slow") < 0.01
    # So the p99 is a fast replica's: under the slow one's own latency.
    assert outcome.p99() < SLOW


@pytest.mark.parametrize("serial", [False, True], ids=["sleeping", "cpu-bound"])
@pytest.mark.parametrize("concurrency", [4, 12])
def test_its_p99_is_under_half_round_robins(serial: bool, concurrency: int) -> None:
    p99s = {}
    for name in ("round_robin", "p2c_expected_latency"):
        clock = FakeClock()
        chosen = make_balancer(name, rng=random.Random(7), clock=clock)
        replicas = {
            "fast-1": Replica(FAST, serial=serial),
            "fast-2": Replica(FAST, serial=serial),
            "slow": Replica(SLOW, serial=serial),
        }
        outcome = run(chosen, clock, replicas, concurrency=concurrency, calls=6000, seed=7)
        p99s[name] = outcome.p99()
    assert p99s["p2c_expected_latency"] <= 0.5 * p99s["round_robin"]


def test_a_busy_parallel_replica_still_beats_an_idle_slow_one() -> None:
    # Latency x (in flight + 1) on the raw latency made 2 ms x 7 calls = 14 ms
    # look close to an idle 20 ms replica; per call it is 2 ms / 6 x 7.
    fast = ExpectedLatency(1.0, 0.001, 1.0, FakeClock())
    slow = ExpectedLatency(1.0, 0.001, 1.0, FakeClock())
    for _ in range(6):
        fast.start()
    fast.finish(FAST)  # answered with 6 in flight
    fast.start()
    slow.start()
    slow.finish(SLOW)  # answered alone
    assert fast.outstanding == 6
    assert fast.cost() == pytest.approx(FAST / 6 * 7)
    assert slow.cost() == pytest.approx(SLOW)
    assert fast.cost() < slow.cost()


def test_a_slow_replica_holding_many_calls_does_not_look_cheap() -> None:
    # Per call it looks fast (20 ms / 6), but a new call would still take 20 ms.
    slow = ExpectedLatency(1.0, 0.001, 1.0, FakeClock())
    for _ in range(6):
        slow.start()
    for _ in range(6):
        slow.finish(SLOW)
    assert slow.cost() == pytest.approx(SLOW)


def test_a_cpu_bound_replica_costs_its_service_time_per_call_queued() -> None:
    load = ExpectedLatency(1.0, 0.001, 1.0, FakeClock())
    for _ in range(4):
        load.start()
    load.finish(4 * FAST)  # served in turn: the 4th of 4 waited for the 3 ahead
    assert load.per_call_seconds() == pytest.approx(FAST)
    assert load.cost() == pytest.approx(FAST * 4)  # 3 still queued, plus the next


# --- failures: a replica failing fast does not look fast ----------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
@pytest.mark.parametrize("concurrency", [4, 12])
@pytest.mark.parametrize("seed", range(3))
def test_a_replica_failing_fast_on_30_percent_gets_under_five_percent(
    code: grpc.StatusCode, concurrency: int, seed: int
) -> None:
    chosen, clock = balancer(seed)
    replicas = {
        "ok-1": Replica(FAST),
        "ok-2": Replica(FAST),
        # Its failures are 4x faster than its answers: by latency alone it would win.
        "failing": Replica(FAST, failure_rate=0.3, failure_code=code, fail_seconds=FAST / 4),
    }
    outcome = run(chosen, clock, replicas, concurrency=concurrency, calls=6000, seed=seed)
    assert outcome.share("failing") < 0.05


def test_a_callers_mistake_is_not_the_endpoints_failure() -> None:
    chosen, clock = balancer(3)
    replicas = {
        "ok-1": Replica(FAST),
        "ok-2": Replica(FAST),
        "asked-badly": Replica(FAST, failure_rate=0.3, failure_code=grpc.StatusCode.NOT_FOUND),
    }
    outcome = run(chosen, clock, replicas, concurrency=4, calls=6000, seed=3)
    assert outcome.share("asked-badly") > 0.25


def test_a_failure_counts_as_the_penalty_and_a_cancel_only_as_a_lower_bound() -> None:
    clock = FakeClock()
    load = ExpectedLatency(1.0, 0.001, 1.0, clock)
    load.start()
    load.finish(0.0001, grpc.StatusCode.UNAVAILABLE)  # the first answer replaces the default
    assert load.per_call_seconds() == 1.0
    load = ExpectedLatency(1.0, 0.001, 1.0, clock)
    load.start()
    load.finish(0.010)
    clock.advance(1.0)
    load.start()
    load.finish(0.001, grpc.StatusCode.CANCELLED)  # gave up early: says nothing new
    assert load.per_call_seconds() == 0.010
    load.start()
    clock.advance(1.0)
    load.finish(0.500, grpc.StatusCode.CANCELLED)  # still out after 500 ms: that is news
    assert load.per_call_seconds() > 0.100


def test_an_unanswered_endpoint_with_a_call_out_waits_for_that_answer() -> None:
    load = ExpectedLatency(1.0, 0.001, 1.0, FakeClock())
    assert load.cost() == 0.001
    load.start()
    assert load.cost() == 1.0  # Finagle's rule: one call at a time until it answers
    load.finish(0.003)
    assert load.cost() == pytest.approx(0.003)


# --- probes: few, and enough to see a recovery --------------------------------


def test_a_shunned_replica_is_probed_at_most_once_a_second() -> None:
    chosen, clock = balancer(11)
    replicas = {"fast-1": Replica(FAST), "fast-2": Replica(FAST), "slow": Replica(100 * FAST)}
    started = clock.now
    outcome = run(chosen, clock, replicas, concurrency=4, calls=20_000, seed=11)
    simulated = clock.now - started
    assert simulated > 5.0
    # Its first calls (before it was known) plus one probe per second at most.
    assert outcome.picks["slow"] <= 3 + simulated


def test_a_replica_that_recovers_gets_its_share_back_within_seconds() -> None:
    # Served in turn, so equal replicas split the calls evenly once it is back
    # (side by side, equals may split unevenly, at no cost in latency).
    chosen, clock = balancer(5)
    replicas = {
        "fast-1": Replica(FAST, serial=True),
        "fast-2": Replica(FAST, serial=True),
        "slow": Replica(SLOW, serial=True),
    }
    endpoints = members(chosen, replicas)
    chosen.update(endpoints)
    slow_phase = run(chosen, clock, replicas, concurrency=4, calls=4000, endpoints=endpoints)
    assert slow_phase.share("slow") < 0.01
    replicas["slow"] = Replica(FAST, serial=True)  # it recovers
    started = clock.now
    run(chosen, clock, replicas, concurrency=4, calls=8000, seed=1, endpoints=endpoints)
    assert clock.now - started < 8.0  # the recovery below took simulated seconds, not minutes
    after = run(chosen, clock, replicas, concurrency=4, calls=6000, seed=2, endpoints=endpoints)
    assert after.share("slow") > 0.25


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("decay_seconds", 0.0),
        ("initial_seconds", -1.0),
        ("failure_penalty_seconds", float("nan")),
        ("probe_seconds", 0.0),
        ("probe_every", 0),
    ],
)
def test_parameters_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        p2c_expected_latency(**{field: value})  # type: ignore[arg-type]
