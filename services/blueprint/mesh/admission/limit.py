"""How many calls a server runs at once: an adaptive concurrency limit.

The gradient family (Netflix concurrency-limits' Gradient2, Envoy's adaptive
concurrency filter): compare the latency calls see now with the latency they
see unloaded, and move the limit so that the server runs as many calls as it
can without queueing them inside itself. Little's law is the why: past the
point where the server is busy all the time, more calls at once only make
each call slower, until callers give up and all the work is wasted.

What it does, and what it refuses to do (both matter; a limiter that sheds a
healthy server is worse than none):

- Each method has its own no-load latency, the minimum of its recent calls
  (Vegas's and Envoy's minRTT), so one limit serves a 1 ms read and a 50 ms
  computation alike: a sample is its latency over its own method's baseline
  (plus a small slack, so microsecond methods are not judged on jitter). It
  is learnt while calls do not queue; a server whose very first calls arrive
  as a flood learns it only once the flood ebbs, and until then the floor,
  the queue's CoDel timeouts and callers' deadlines are what protect it.
- Samples are judged a window at a time, by their median, so one stall (a GC
  pause, a neighbour on the CPU) moves nothing.
- The limit goes down only when both are true in a window: calls are
  queueing (others waiting for a slot, or the event loop so busy that new
  calls wait unseen inside grpc: `loop_lag`) AND latency rose past
  `tolerance` times no-load. Slow calls with nobody waiting are the
  dependency's problem, not overload; waiting calls at normal latency mean
  the limit is too low. The cut is multiplicative, at most halving.
- It goes up, additively, when calls are queueing, latency is normal and
  the event loop has spare time: the server has room and the demand to use it.
- Without queueing it stays where it is: there is no evidence either way.
- It never goes below `min_limit` or above `max_limit`.

Pure logic with an injected clock: the admission gate feeds it, tests feed it
fake latencies.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


class MethodBaseline:
    """The lowest latency of a method over the last one to two `period`s.

    Two buckets, current and previous: the minimum forgets a value after at
    most two periods, so a method that became slower for good (a bigger
    table) is judged against its new normal, not its old best. Only calls
    that ran unqueued move time on (`loaded=False`): under a standing queue
    every latency is a loaded one, and forgetting the no-load value then
    would make overload look normal. A lower value is always taken.
    """

    __slots__ = ("_current", "_period", "_previous", "_started", "value")

    def __init__(self, period: float, now: float) -> None:
        self._period = period
        self._started = now
        self._current = math.inf
        self._previous = math.inf
        self.value = math.inf  # min(current, previous), kept: it is read on every call

    def observe(self, latency: float, now: float, *, loaded: bool = False) -> None:
        if not loaded and now - self._started >= self._period:
            skipped = now - self._started >= 2 * self._period
            self._previous = math.inf if skipped else self._current
            self._current = math.inf
            self._started = now
            self.value = self._previous
        if latency < self._current:
            self._current = latency
        if latency < self.value:
            self.value = latency


class GradientLimit:
    """The adaptive limit; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 8,
        max_limit: int = 1000,
        tolerance: float = 1.5,
        window_seconds: float = 0.1,
        window_samples: int = 4,
        baseline_seconds: float = 30.0,
        slack_seconds: float = 0.002,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        if not min_limit <= initial_limit <= max_limit:
            raise ValueError("initial_limit must be within [min_limit, max_limit]")
        if tolerance <= 1:
            raise ValueError("tolerance must be above 1: no-load latency itself is not slow")
        if window_seconds <= 0 or window_samples < 1 or baseline_seconds <= 0:
            raise ValueError("windows must be positive")
        if slack_seconds < 0:
            raise ValueError("slack_seconds must be >= 0")
        self.min_limit = min_limit
        self.max_limit = max_limit
        self._limit = float(initial_limit)  # moved in fractions; `limit` is what applies
        self.limit = max(min_limit, initial_limit)  # kept, not computed: read on every call
        self._tolerance = tolerance
        self._window_seconds = window_seconds
        self._window_samples = window_samples
        self._baseline_seconds = baseline_seconds
        self._slack = slack_seconds
        self._clock = clock
        self._baselines: dict[str, MethodBaseline] = {}
        self._window_started = clock()
        self._ratios: list[float] = []
        self._queueing = False
        self._loop_busy = False
        self._latency_sum = 0.0
        self.recent_latency = 0.0  # mean of the last window's latencies, seconds

    def baseline(self, method: str) -> float | None:
        """The method's no-load latency; None before its first call."""
        found = self._baselines.get(method)
        if found is None:
            return None
        value = found.value
        return None if value == math.inf else value

    def record(
        self,
        method: str,
        latency: float,
        queueing: bool,
        dropped: bool = False,
        loop_busy: bool = False,
        now: float | None = None,
    ) -> None:
        """One call's time in the handler (positional: it runs on every call).

        `queueing`: other calls were waiting for a slot when this one ended.
        `loop_busy`: the event loop has no spare time (`loop_lag`): calls queue
        unseen, before the gate, so it counts as queueing, and the limit may not grow.
        `dropped`: the call ended without an answer because its caller had gone
        (deadline passed, cancelled); it tells that calls are too slow to be
        useful, so it counts as slower than any answer.
        `now`: the limit's clock read just before, if the caller has it.
        """
        if now is None:
            now = self._clock()
        baseline = self._baselines.get(method)
        if baseline is None:
            baseline = self._baselines[method] = MethodBaseline(self._baseline_seconds, now)
        if dropped:
            self._ratios.append(math.inf)
        else:
            baseline.observe(latency, now, loaded=queueing or loop_busy)
            self._ratios.append(latency / (baseline.value + self._slack))
        self._latency_sum += latency
        if queueing or loop_busy:
            self._queueing = True
            if loop_busy:
                self._loop_busy = True
        if (
            now - self._window_started >= self._window_seconds
            and len(self._ratios) >= self._window_samples
        ):
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        ratio = statistics.median(self._ratios)
        self.recent_latency = self._latency_sum / len(self._ratios)
        if self._queueing:
            if ratio > self._tolerance:
                factor = max(0.5, self._tolerance / ratio)
                # Cut from the limit in force, not its fraction: 2.9 x 0.8 must leave 2.
                self._limit = max(float(self.min_limit), min(self._limit, self.limit) * factor)
                self.limit = max(self.min_limit, int(self._limit))
            elif not self._loop_busy:
                # About +1 a window when small, +10 % when large: quick to find room.
                step = max(1.0, 0.1 * self._limit)
                self._limit = min(float(self.max_limit), self._limit + step)
                self.limit = max(self.min_limit, int(self._limit))
        self._window_started = now
        self._ratios.clear()
        self._latency_sum = 0.0
        self._queueing = False
        self._loop_busy = False
