"""Load signals the client feeds around every call and a balancer reads.

`finish` runs once per RPC, so each method here is O(1) arithmetic on floats.
"""

from __future__ import annotations

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


class Ewma:
    """Time-weighted average round-trip time, times the calls in flight (plus one).

    Each sample is weighted by the time since the previous one,
    `w = exp(-elapsed / decay)`, not by a fixed per-call factor: the average
    then spans the same stretch of time whatever the call rate, and a sample
    after a long silence counts almost fully.
    """

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

    def rtt_seconds(self) -> float:
        """The current average round-trip time."""
        return self._rtt

    def start(self) -> None:
        self.outstanding += 1

    def finish(self, rtt_seconds: float) -> None:
        if self.outstanding > 0:
            self.outstanding -= 1
        now = self._clock()
        if not self._measured:
            self._rtt, self._stamp, self._measured = _sample(rtt_seconds), now, True
            return
        elapsed = now - self._stamp
        w = math.exp(-elapsed / self._decay) if elapsed > 0.0 else 1.0
        self._rtt = self._rtt * w + _sample(rtt_seconds) * (1.0 - w)
        self._stamp = now

    def cost(self) -> float:
        # Latency times queue length: the expected wait behind the calls
        # already sent, so a fast endpoint stops winning once it backs up.
        return self._rtt * (self.outstanding + 1)


class PeakEwma:
    """Finagle's and Linkerd's peak-sensitive EWMA of round-trip time.

    A sample above the current estimate replaces it at once, so one slow
    answer moves traffic away immediately rather than after many. A sample
    below it is blended in by time-decayed weight, so recovery is gradual.
    Between samples the estimate decays toward zero (as tower's PeakEwma does
    when read): an endpoint that was slow and then left alone looks cheaper
    and cheaper until it is tried again, instead of being shunned forever on
    stale evidence. The decay is computed on read, so reading mutates nothing.
    """

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

    def rtt_seconds(self) -> float:
        """The estimate now: the last one, decayed by the time since."""
        elapsed = self._clock() - self._stamp
        return self._rtt * math.exp(-elapsed / self._decay) if elapsed > 0.0 else self._rtt

    def start(self) -> None:
        self.outstanding += 1

    def finish(self, rtt_seconds: float) -> None:
        if self.outstanding > 0:
            self.outstanding -= 1
        now = self._clock()
        if not self._measured:
            self._rtt, self._stamp, self._measured = _sample(rtt_seconds), now, True
            return
        elapsed = now - self._stamp
        w = math.exp(-elapsed / self._decay) if elapsed > 0.0 else 1.0
        current = self._rtt * w  # what a read just before this sample showed
        rtt = _sample(rtt_seconds)
        if rtt > current:
            self._rtt = rtt
        else:
            # A convex mix of `current` and a smaller sample: a fast answer
            # never raises the cost, and it pulls harder after a longer gap.
            self._rtt = current * w + rtt * (1.0 - w)
        self._stamp = now

    def cost(self) -> float:
        return self.rtt_seconds() * (self.outstanding + 1)
