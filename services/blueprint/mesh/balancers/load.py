"""Load signals the client feeds around every call and a balancer reads.

`finish` runs once per RPC, so each method here is O(1) arithmetic on floats.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


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

    def finish(self, rtt_seconds: float) -> None:
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

    def finish(self, rtt_seconds: float) -> None:
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
        elapsed = self._clock() - self._stamp
        return self._rtt * math.exp(-elapsed / self._decay) if elapsed > 0.0 else self._rtt

    def _observe(self, sample: float, weight: float) -> float:
        current = self._rtt * weight  # what a read just before this sample showed
        if sample > current:
            return sample
        # A convex mix of `current` and a smaller sample: a fast answer never
        # raises the cost, and it pulls harder after a longer gap.
        return current * weight + sample * (1.0 - weight)
