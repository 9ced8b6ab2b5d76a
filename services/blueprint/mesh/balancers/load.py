"""Load signals the client feeds around every call and a balancer reads.

`finish` runs once per RPC, so each method here is O(1) arithmetic on floats.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable

import grpc

from blueprint.mesh.resilience.endpoint_health import ENDPOINT_FAILURES

Clock = Callable[[], float]

# Answers that say the endpoint could not do the work. RESOURCE_EXHAUSTED is one
# here though not for the breaker: a replica shedding load says "send less",
# and that is exactly what a balancer can do.
FAILURES = ENDPOINT_FAILURES | {grpc.StatusCode.RESOURCE_EXHAUSTED}


def positive_seconds(name: str, value: float) -> float:
    """`value` as a float if it is a finite duration above zero, else ValueError."""
    # Written so that NaN fails too: every comparison with NaN is false.
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _sample(rtt_seconds: float) -> float:
    # A negative or NaN duration (a clock stepped back, a caller's bug) must not
    # poison an average for good; zero is the harmless reading.
    return rtt_seconds if rtt_seconds > 0.0 else 0.0


class PendingRequests:
    """Cost is the number of calls in flight."""

    __slots__ = ("outstanding",)

    def __init__(self) -> None:
        self.outstanding: int = 0

    def start(self) -> None:
        self.outstanding += 1

    def finish(self, rtt_seconds: float, code: grpc.StatusCode | None = None) -> None:
        # A stray finish must not drive the count negative and make the
        # endpoint look idler than idle.
        if self.outstanding > 0:
            self.outstanding -= 1

    def cost(self) -> float:
        return float(self.outstanding)


class _RttEstimate(abc.ABC):
    """What both RTT estimates share: calls in flight, the first-sample rule, the
    time-weighted blend. Subclasses say how a sample moves the estimate."""

    __slots__ = ("_clock", "_decay", "_measured", "_rtt", "_stamp", "outstanding")

    def __init__(
        self,
        decay_seconds: float,
        initial_rtt_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._decay = positive_seconds("decay_seconds", decay_seconds)
        self._rtt = positive_seconds("initial_rtt_seconds", initial_rtt_seconds)
        self._clock = clock
        self._stamp = clock()
        # The initial RTT only stands in until the first answer. Blended in by
        # time weight, it would linger for about `decay` at a high call rate
        # and make a fast new endpoint look as slow as the default.
        self._measured = False
        self.outstanding: int = 0

    def start(self) -> None:
        self.outstanding += 1

    def finish(self, rtt_seconds: float, code: grpc.StatusCode | None = None) -> None:
        # The outcome is not read: these are Finagle's and Linkerd's estimates,
        # kept as they are; `ExpectedLatency` is the failure-aware one.
        if self.outstanding > 0:
            self.outstanding -= 1
        now = self._clock()
        sample = _sample(rtt_seconds)
        if self._measured:
            elapsed = now - self._stamp
            weight = math.exp(-elapsed / self._decay) if elapsed > 0.0 else 1.0
            self._rtt = self._observe(sample, weight)
        else:
            self._rtt, self._measured = sample, True
        self._stamp = now

    @abc.abstractmethod
    def _observe(self, sample: float, weight: float) -> float:
        """The new estimate after `sample`; `weight` is the old estimate's share."""

    def rtt_seconds(self) -> float:
        return self._rtt

    def cost(self) -> float:
        # Latency times queue length: the expected wait behind the calls
        # already sent, so a fast endpoint stops winning once it backs up.
        return self.rtt_seconds() * (self.outstanding + 1)


class Ewma(_RttEstimate):
    """Time-weighted average round-trip time, times the calls in flight (plus one).

    Each sample is weighted by the time since the previous one,
    `w = exp(-elapsed / decay)`, not by a fixed per-call factor: the average
    then spans the same stretch of time whatever the call rate, and a sample
    after a long silence counts almost fully.
    """

    __slots__ = ()

    def _observe(self, sample: float, weight: float) -> float:
        return self._rtt * weight + sample * (1.0 - weight)


class PeakEwma(_RttEstimate):
    """Finagle's and Linkerd's peak-sensitive EWMA of round-trip time.

    A sample above the current estimate replaces it at once, so one slow
    answer moves traffic away immediately rather than after many. A sample
    below it is blended in by time-decayed weight, so recovery is gradual.
    Between samples the estimate decays toward zero (as tower's PeakEwma does
    when read): an endpoint that was slow and then left alone looks cheaper
    and cheaper until it is tried again, instead of being shunned forever on
    stale evidence. The decay is computed on read, so reading mutates nothing.
    """

    __slots__ = ()

    def rtt_seconds(self) -> float:
        """The estimate now: the last one, decayed by the time since."""
        if not self._measured:
            # The default is the same for every new endpoint. Decaying it from
            # the endpoint's creation made the first-created one the cheapest,
            # so every short-lived client sent its calls there.
            return self._rtt
        elapsed = self._clock() - self._stamp
        return self._rtt * math.exp(-elapsed / self._decay) if elapsed > 0.0 else self._rtt

    def _observe(self, sample: float, weight: float) -> float:
        current = self._rtt * weight  # what a read just before this sample showed
        if sample > current:
            return sample
        # A convex mix of `current` and a smaller sample: a fast answer never
        # raises the cost, and it pulls harder after a longer gap.
        return current * weight + sample * (1.0 - weight)


class ExpectedLatency:
    """How long a new call to the endpoint can expect to take, failures counted as slow.

    cost = max(latency, time per call x (calls in flight + 1)), from two
    time-weighted averages: the latency of its answers, and each answer's
    latency divided by the calls that were in flight with it (Little's law:
    a replica that answers 6 concurrent calls in 2 ms each gets through one
    every 0.33 ms). The first term is the cost of a replica that serves calls
    side by side (sleeps, waits on I/O): its queue does not slow it, so a busy
    fast one still costs about 2 ms and an idle slow one 20 ms. The second is
    the cost of one that serves them in turn (CPU-bound): its time per call
    for each call queued. Finagle's and Linkerd's latency x (in flight + 1)
    multiplies the queue into a latency that already contains it: two fast
    replicas holding 6 calls each looked like 2 ms x 7 = 14 ms, close enough
    to an idle slow one's 20 ms to send it calls again. The max also keeps a
    slow replica that happens to hold many calls from looking cheap per call.

    A failed answer (see FAILURES) counts as a latency of at least
    `failure_penalty`, so a replica answering fast errors looks slow, not fast.
    A cancelled call (the caller gave up, a hedge lost) only says the call took
    at least that long: it counts only where that raises an estimate.

    Until its first answer an endpoint costs `initial` when idle, so fresh
    clients spread their first calls at random among equals; with a call
    already out and nothing known (Finagle's rule) it costs the failure
    penalty: a new, possibly slow endpoint gets one call at a time until it
    answers. Nothing decays toward zero while idle: the balancer re-learns an
    endpoint it avoids by sending it a probe now and then.
    """

    __slots__ = (
        "_clock",
        "_decay",
        "_latency",
        "_measured",
        "_penalty",
        "_per_call",
        "answered_at",
        "outstanding",
        "picked_at",
    )

    def __init__(
        self,
        decay_seconds: float,
        initial_seconds: float,
        failure_penalty_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._decay = positive_seconds("decay_seconds", decay_seconds)
        self._latency = self._per_call = positive_seconds("initial_seconds", initial_seconds)
        self._penalty = positive_seconds("failure_penalty_seconds", failure_penalty_seconds)
        self._clock = clock
        self._measured = False
        self.outstanding: int = 0
        self.answered_at = clock()  # the last answer's time, or the endpoint's creation
        self.picked_at = 0  # the balancer's pick count when it last chose this endpoint

    def start(self) -> None:
        self.outstanding += 1

    def finish(self, rtt_seconds: float, code: grpc.StatusCode | None = None) -> None:
        in_flight = self.outstanding  # this call included
        if in_flight > 0:
            self.outstanding = in_flight - 1
        else:
            in_flight = 1
        latency = _sample(rtt_seconds)
        if code is not None and code in FAILURES:
            latency = per_call = max(latency, self._penalty)
        else:
            # OK, or an answer that says the endpoint worked (a caller's
            # mistake, a refusal by policy): this is how fast it was.
            per_call = latency / in_flight
            if code is grpc.StatusCode.CANCELLED and self._measured:
                # Only a lower bound: it may raise an estimate, never lower one.
                latency = max(latency, self._latency)
                per_call = max(per_call, self._per_call)
        now = self._clock()
        if self._measured:
            # Weighted by the time since the last answer, not per call: the
            # averages span the same stretch at any call rate, and a probe
            # after a long silence counts almost fully.
            elapsed = now - self.answered_at
            old = math.exp(-elapsed / self._decay) if elapsed > 0.0 else 1.0
            self._latency = self._latency * old + latency * (1.0 - old)
            self._per_call = self._per_call * old + per_call * (1.0 - old)
        else:
            # The default only stands in until the first answer.
            self._latency, self._per_call, self._measured = latency, per_call, True
        self.answered_at = now

    def latency_seconds(self) -> float:
        return self._latency

    def per_call_seconds(self) -> float:
        return self._per_call

    def cost(self) -> float:
        if self.outstanding and not self._measured:
            return self._penalty * self.outstanding
        queued = self._per_call * (self.outstanding + 1)
        return queued if queued > self._latency else self._latency
