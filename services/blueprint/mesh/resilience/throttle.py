"""Client-side adaptive throttling (Google SRE book, "Handling Overload").

A server that sheds load still pays for every call it refuses: it has to
accept it, read it and answer it, and when callers keep coming back the
refusals alone can fill its event loop (calls then wait unseen in its
transport until their deadlines pass, and callers never hear that they
should back off). So each client keeps, per target service, two counts over
a sliding window (two minutes by default):

- requests: calls the application asked for, refused locally or not (a call
  sent counts once it has ended, so calls in flight do not look refused);
- accepts: calls the target served, i.e. answered with anything but a
  refusal (RESOURCE_EXHAUSTED) or silence (DEADLINE_EXCEEDED: no answer in
  time is what an overloaded server gives a caller whose call waited in line).

and refuses a new call locally with probability

    max(0, (requests - K * accepts) / (requests + 1))

Healthy, accepts ~ requests and nothing is refused. When the target accepts
only a share of calls, the client sends about K times what it accepts, and
refuses the rest before they cost the server anything. K = 2 (the book's
value) still sends twice what gets through, so the client notices quickly
when the server has room again; a lower K throttles harder.

Pure logic with an injected clock and random source: the router asks, tests
feed it outcomes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable


class AdaptiveThrottle:
    """Requests and accepts of one target over `window_seconds`, in `buckets` slots.

    Old traffic is forgotten a slot at a time (a slot is window / buckets long),
    so counting costs O(1) per call whatever the rate.
    """

    def __init__(
        self,
        *,
        k: float = 2.0,
        window_seconds: float = 120.0,
        buckets: int = 120,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if k < 1:
            raise ValueError("k must be >= 1: below 1 it refuses calls the target accepts")
        if window_seconds <= 0 or buckets < 1:
            raise ValueError("need window_seconds > 0 and buckets >= 1")
        self.k = k
        self._slot_seconds = window_seconds / buckets
        self._clock = clock
        self._rng = rng or random.Random()
        self._requests = [0] * buckets
        self._accepts = [0] * buckets
        self._total_requests = 0
        self._total_accepts = 0
        self._slot = self._slot_at(clock())

    def _slot_at(self, now: float) -> int:
        return math.floor(now / self._slot_seconds)

    def _advance(self) -> int:
        """Clear the slots that left the window; returns the current slot's index."""
        slot = self._slot_at(self._clock())
        buckets = len(self._requests)
        if slot != self._slot:
            for passed in range(self._slot + 1, min(slot, self._slot + buckets) + 1):
                index = passed % buckets
                self._total_requests -= self._requests[index]
                self._total_accepts -= self._accepts[index]
                self._requests[index] = 0
                self._accepts[index] = 0
            self._slot = slot
        return slot % buckets

    @property
    def requests(self) -> int:
        self._advance()
        return self._total_requests

    @property
    def accepts(self) -> int:
        self._advance()
        return self._total_accepts

    def reject_probability(self) -> float:
        """The chance the next call is refused locally, from the window as it is now."""
        self._advance()
        excess = self._total_requests - self.k * self._total_accepts
        return max(0.0, excess / (self._total_requests + 1))

    def allow(self) -> bool:
        """May the next call go out? A refused one is counted as a request at once (the
        demand is what the ratio is about); one let through is counted when it ends
        (`record`), so calls still in flight never look refused."""
        probability = self.reject_probability()
        if probability <= 0 or self._rng.random() >= probability:
            return True
        self._count(accepted=False)
        return False

    def record(self, *, accepted: bool) -> None:
        """A call let through has ended; `accepted`: the target served it."""
        self._count(accepted=accepted)

    def _count(self, *, accepted: bool) -> None:
        index = self._advance()
        self._requests[index] += 1
        self._total_requests += 1
        if accepted:
            self._accepts[index] += 1
            self._total_accepts += 1
