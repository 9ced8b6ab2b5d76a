"""The door every unary call passes: run now, wait briefly for a slot, or be shed.

Calls over the limit wait in a bounded queue instead of being refused at
once: a burst is smoothed, not punished. How long they may wait follows
CoDel as Facebook applies it to request queues ("Fail at scale", 2015): while
the queue empties now and then, it is a burst, and a call may wait up to
`interval`; once the queue has not been empty for a whole `interval`, it is a
standing queue, the server is overloaded, and a call may wait only `target`.
In that state the newest call gets the next slot (adaptive LIFO): its caller
still has most of its deadline, while the oldest are the likeliest to have
given up, and they are shed first. A call that says how long it stood unseen
in the transport (the mesh client's callers do) has that much less to wait:
its caller waits for both alike, so a burst waits `interval` in all, and one
that has already stood longer is shed at once when no slot is free.

A call whose deadline has passed never starts, waiting or not: nobody would
read its answer (DEADLINE_EXCEEDED). Nor does one with less time left than its
method takes unloaded: it would miss its deadline anyway, and on a busy server
it is shed (its caller still listens, and backs off as told). Nor, once calls
have kept arriving after waiting unseen in the transport longer than `interval`
for a whole `interval` (known when callers send the timeout they set, as the
mesh client does), does any that waited that long: it is shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from blueprint.mesh.admission.limit import GradientLimit


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    SHED = "shed"  # answer RESOURCE_EXHAUSTED with a time to come back
    EXPIRED = "expired"  # answer DEADLINE_EXCEEDED; the handler never ran


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[Verdict]
    enqueued: float  # when it arrived: less the time it stood unseen, when known
    start_by: float  # on the gate's clock: after this it cannot finish in time
    expires: float  # its deadline on the gate's clock; inf without one
    timer: asyncio.TimerHandle | None = field(default=None)
    timed_to_deadline: bool = False


class Ticket:
    """An admitted call; give it back with `AdmissionGate.leave`."""

    # A slotted class, not a frozen dataclass: one is made per call.
    __slots__ = ("method", "started")

    def __init__(self, method: str, started: float) -> None:
        self.method = method
        self.started = started


class AdmissionGate:
    """Counts calls in flight against a `GradientLimit` and queues the rest."""

    def __init__(
        self,
        limit: GradientLimit,
        *,
        queue_size: int = 100,
        interval_seconds: float = 0.1,
        target_seconds: float = 0.01,
        retry_after_min_seconds: float = 0.05,
        retry_after_max_seconds: float = 5.0,
        shed_rate_target: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        loop_busy: Callable[[], bool] = lambda: False,
    ) -> None:
        if queue_size < 0:
            raise ValueError("queue_size must be >= 0")
        if not 0 < target_seconds <= interval_seconds:
            raise ValueError("need 0 < target_seconds <= interval_seconds")
        if not 0 < retry_after_min_seconds <= retry_after_max_seconds:
            raise ValueError("need 0 < retry_after_min_seconds <= retry_after_max_seconds")
        if shed_rate_target <= 0:
            raise ValueError("shed_rate_target must be positive")
        self.limit = limit
        self._queue_size = queue_size
        self._interval = interval_seconds
        self._target = target_seconds
        self._retry_min = retry_after_min_seconds
        self._retry_max = retry_after_max_seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self._loop_busy = loop_busy
        self._shed_rate_target = shed_rate_target
        self._retry_base = retry_after_min_seconds
        self._shed_since = clock()
        self._shed_recently = 0
        self._waiters: deque[_Waiter] = deque()
        self._last_empty = clock()
        self._stale_since: float | None = None  # calls arrive stale since then
        self.in_flight = 0
        self.shed_count = 0
        self.expired_count = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def overloaded(self) -> bool:
        """A standing queue: not empty at any moment of the last `interval`."""
        now = self._clock()
        if not self._waiters:
            self._last_empty = now
            return False
        return now - self._last_empty >= self._interval

    def retry_after(self) -> float:
        """When a shed caller should come back, jittered so that they do not return together.

        At least when the calls ahead of it would have drained. Beyond that, callers told
        to wait come back and are shed again, and every refusal costs the loop time that
        could serve a call: with N callers backing off D seconds, about N / D return each
        second. N is unknown, but the shed rate shows it; so the wait is scaled, every half
        second, by measured shed rate over `shed_rate_target` (at most x4 up, /2 down: a
        flood must be slowed within a second or two), which settles where refusals cost a
        bounded share of the server.
        """
        now = self._clock()
        elapsed = now - self._shed_since
        if elapsed >= 0.5:
            rate = self._shed_recently / elapsed
            factor = min(4.0, max(0.5, rate / self._shed_rate_target))
            self._retry_base = min(self._retry_max, max(self._retry_min, self._retry_base * factor))
            self._shed_since = now
            self._shed_recently = 0
        queued = self.in_flight + len(self._waiters)
        drain = self.limit.recent_latency * queued / self.limit.limit
        seconds = min(self._retry_max, max(self._retry_base, drain))
        return seconds * self._rng.uniform(0.5, 1.5)

    def admit_now(
        self, method: str, time_remaining: float | None, waited: float | None = None
    ) -> Ticket | None:
        """The common case, decided without awaiting: a ticket when the call may run at
        once; None when it has to wait or be refused (`enter` then decides which).
        Everything it checks, `enter` checks again; it only skips a coroutine per call."""
        # Written out flat (no _too_late, no _admit): it runs on every call.
        if time_remaining is not None and (
            time_remaining <= 0 or time_remaining <= (self.limit.baseline(method) or 0.0)
        ):
            return None
        if waited is not None:
            if waited > self._interval:
                return None
            self._stale_since = None  # as _stands_unseen: a fresh call ends a stale spell
        if self._waiters or self.in_flight >= self.limit.limit:
            return None
        self.in_flight += 1
        return Ticket(method, self._clock())

    async def enter(
        self, method: str, time_remaining: float | None, waited: float | None = None
    ) -> Verdict | Ticket:
        """A ticket once the call may run, or why it may not.

        `waited`: how long the call sat in the transport before it got here, when its
        caller said what timeout it sent (the mesh client does); None when unknown.
        """
        ticket = self.admit_now(method, time_remaining, waited)
        if ticket is not None:
            return ticket
        if time_remaining is not None and time_remaining <= 0:
            self.expired_count += 1
            return Verdict.EXPIRED
        too_late = self._too_late(method)
        if time_remaining is not None and time_remaining <= too_late:
            # It cannot finish in time. On a busy server it waited in line to get here:
            # tell its caller to back off, while it can still hear it. On an idle one its
            # deadline was too short to begin with.
            if self._waiters or self._loop_busy():
                return self._shed()
            self.expired_count += 1
            return Verdict.EXPIRED
        if waited is not None and self._stands_unseen(waited):
            # Calls have stood in a queue nobody sees (grpc's, before any handler code:
            # the loop lag and the gate's own queue need not show it) longer than a burst
            # may wait, for a whole interval: that queue is standing, and serving from
            # its old end keeps every answer late. Shed while callers still listen: the
            # queue drains at the cost of refusals, not of calls.
            return self._shed()
        if not self._waiters and self.in_flight < self.limit.limit:
            return self._admit(method)
        overloaded = self.overloaded()  # also notes the moment the queue was last empty
        if self._queue_size == 0:
            return self._shed()
        now = self._clock()
        # What it stood unseen in the transport counts against the wait it may have:
        # the caller waits for both alike.
        arrived = now - max(0.0, waited) if waited is not None else now
        patience = (self._target if overloaded else self._interval) - (now - arrived)
        if patience <= 0:
            return self._shed()
        # The latest moment it may still start and finish in time.
        expires = math.inf if time_remaining is None else now + time_remaining
        waiter = _Waiter(
            asyncio.get_running_loop().create_future(), arrived, expires - too_late, expires
        )
        if len(self._waiters) >= self._queue_size:
            self._resolve(self._waiters.popleft(), Verdict.SHED)  # the oldest goes
        self._waiters.append(waiter)
        if waiter.start_by - now <= patience:
            patience = waiter.start_by - now
            # Without a no-load latency to keep in hand, the timer is the deadline itself.
            waiter.timed_to_deadline = waiter.start_by == waiter.expires
        waiter.timer = asyncio.get_running_loop().call_later(patience, self._give_up, waiter)
        try:
            verdict = await waiter.future
        except asyncio.CancelledError:
            # The caller went away while waiting (or just as it was admitted).
            if waiter.future.done() and not waiter.future.cancelled():
                if waiter.future.result() is Verdict.ADMITTED:
                    self.in_flight -= 1
                    self._grant()
            else:
                self._forget(waiter)
            raise
        if verdict is Verdict.ADMITTED:
            return Ticket(method, self._clock())
        if verdict is Verdict.SHED:
            return self._shed()
        self.expired_count += 1
        return verdict

    def _stands_unseen(self, waited: float) -> bool:
        """CoDel on the wait before the gate: True once every call that said how long it
        waited has waited over `interval`, for at least `interval`. One stall (a
        neighbour on the CPU) leaves a backlog that drains within it: nothing is shed."""
        if waited <= self._interval:
            self._stale_since = None
            return False
        now = self._clock()
        if self._stale_since is None:
            self._stale_since = now
        return now - self._stale_since >= self._interval

    def _too_late(self, method: str) -> float:
        """Time left below which the call cannot finish: its method's no-load latency.
        Answering at once frees the caller; running it would burn time nobody waits for."""
        return self.limit.baseline(method) or 0.0

    def leave(self, ticket: Ticket, dropped: bool = False) -> None:
        """The call ended; `dropped` when its caller had gone (cancelled, expired)."""
        self.in_flight -= 1
        now = self._clock()
        queueing = bool(self._waiters)
        self.limit.record(
            ticket.method, now - ticket.started, queueing, dropped, self._loop_busy(), now
        )
        if queueing:
            self._grant()
        else:
            self._last_empty = now

    def _admit(self, method: str) -> Ticket:
        self.in_flight += 1
        return Ticket(method, self._clock())

    def _shed(self) -> Verdict:
        self.shed_count += 1
        self._shed_recently += 1
        return Verdict.SHED

    def _grant(self) -> None:
        """Hand free slots to waiters: the oldest in a burst, the newest when overloaded;
        waiters past their deadline, or past `target` in overload, are let go."""
        while self._waiters and self.in_flight < self.limit.limit:
            overloaded = self.overloaded()
            waiter = self._waiters.pop() if overloaded else self._waiters.popleft()
            now = self._clock()
            if now >= waiter.expires:
                self._resolve(waiter, Verdict.EXPIRED)
            elif now >= waiter.start_by or (overloaded and now - waiter.enqueued > self._target):
                self._resolve(waiter, Verdict.SHED)
            else:
                self.in_flight += 1
                self._resolve(waiter, Verdict.ADMITTED)
        if not self._waiters:
            self._last_empty = self._clock()

    def _give_up(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        self._forget(waiter)
        expired = waiter.timed_to_deadline or self._clock() >= waiter.expires
        self._resolve(waiter, Verdict.EXPIRED if expired else Verdict.SHED)

    def _forget(self, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):  # already handed a verdict
            self._waiters.remove(waiter)
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not self._waiters:
            self._last_empty = self._clock()

    def _resolve(self, waiter: _Waiter, verdict: Verdict) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        if not waiter.future.done():
            waiter.future.set_result(verdict)
