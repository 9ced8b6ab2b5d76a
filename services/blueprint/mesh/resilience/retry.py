"""When to try again, how long to wait, and how many retries a caller may add.

Why a budget and not only a maximum number of attempts: with "3 attempts"
alone, a failing dependency receives three times its normal load exactly when
it is least able to take it. A budget caps retries at a share of recent calls
(plus a small floor so a quiet client can still retry), as Finagle, Envoy and
Linkerd do, so retries help with scattered failures and fade out in an outage.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

# Codes that say the call did not happen or may safely happen again for an
# idempotent method. DEADLINE_EXCEEDED is not here: the caller's time is spent.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})
PUSHBACK_HEADER = "grpc-retry-pushback-ms"
STATUS_DETAILS_HEADER = "grpc-status-details-bin"
# The ErrorInfo reason of a call shed before it ran (blueprint.mesh.errors.OVERLOADED_REASON;
# not imported: the client side does not depend on the server's error table).
_SHED_REASON = ("blueprint", "OVERLOADED")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog): the wait before
    retry n is uniform in [0, min(cap, base * 2**n)], which spreads retries of many
    clients instead of synchronising them."""

    max_attempts: int = 3
    base_seconds: float = 0.025
    max_backoff_seconds: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not (self.base_seconds > 0 and self.max_backoff_seconds >= self.base_seconds):
            raise ValueError("need 0 < base_seconds <= max_backoff_seconds")

    def backoff(self, retry_number: int) -> float:
        """Seconds to wait before retry `retry_number` (1 for the first retry)."""
        ceiling = min(self.max_backoff_seconds, self.base_seconds * 2 ** (retry_number - 1))
        return self.rng.uniform(0, ceiling)

    def delay_before_retry(
        self,
        code: grpc.StatusCode,
        trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
        *,
        idempotent: bool,
        attempts_made: int,
        keyed: bool = False,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when not to retry at all.

        `keyed`: the call carries an idempotency key, so an ABORTED answer that says when
        to come back (another attempt with the key is in flight) is retried then, and the
        retry answers what that attempt did.
        """
        if attempts_made >= self.max_attempts:
            return None
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            # Overload (or a quota) that says when to come back: the channel retries on
            # another endpoint. A call the server shed unstarted is safe to repeat even
            # when the method is not idempotent.
            if idempotent or was_shed(trailing_metadata):
                return retry_info_delay(trailing_metadata)
            return None
        if not idempotent:
            return None
        if keyed and code is grpc.StatusCode.ABORTED:
            return retry_info_delay(trailing_metadata)
        if code not in RETRYABLE_CODES:
            return None
        pushback = server_pushback(trailing_metadata)
        if isinstance(pushback, _Stop):
            return None
        if pushback is not None:
            return pushback
        told = retry_info_delay(trailing_metadata)
        return told if told is not None else self.backoff(attempts_made)


class _Stop:
    """The server said: do not retry."""


STOP = _Stop()


def server_pushback(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | _Stop | None:
    """gRPC's retry pushback (A6): a non-negative integer of milliseconds means "retry after
    that long"; anything else present means "do not retry"; absent means no opinion."""
    for key, value in metadata or ():
        if key != PUSHBACK_HEADER:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if text.isdigit():
            return int(text) / 1000.0
        return STOP
    return None


def _rich_status(metadata: Iterable[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key != STATUS_DETAILS_HEADER or not isinstance(value, bytes):
            continue
        try:
            return status_pb2.Status.FromString(value)
        except DecodeError:
            return None
    return None


def retry_info_delay(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The wait a status's `google.rpc.RetryInfo` detail asks for; None without one."""
    status = _rich_status(metadata)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            seconds: float = info.retry_delay.ToNanoseconds() / 1e9
            return max(0.0, seconds)
    return None


def was_shed(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """The status says the server refused the call before running it (load shedding)."""
    status = _rich_status(metadata)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and (info.domain, info.reason) == _SHED_REASON:
            return True
    return False


class RetryBudget:
    """Retries allowed = ratio x calls over the last `window_seconds` + a floor per second.

    Counts live in one slot per second of the window, so the budget forgets old
    traffic in steps of a second; cheap (O(1) per call) and good enough for a
    limit whose point is the order of magnitude.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 5.0,
        window_seconds: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError("ratio must be between 0 and 1")
        if min_per_second < 0 or window_seconds < 1:
            raise ValueError("min_per_second must be >= 0 and window_seconds >= 1")
        self._ratio = ratio
        self._floor = min_per_second * window_seconds
        self._window = window_seconds
        self._clock = clock
        self._calls = [0] * window_seconds
        self._retries = [0] * window_seconds
        self._slot_second = math.floor(clock())

    def _advance(self) -> int:
        second = math.floor(self._clock())
        if second != self._slot_second:
            # Clear the slots of the seconds that passed (at most the whole window).
            for s in range(
                self._slot_second + 1, min(second, self._slot_second + self._window) + 1
            ):
                index = s % self._window
                self._calls[index] = 0
                self._retries[index] = 0
            self._slot_second = second
        return second % self._window

    def record_call(self) -> None:
        self._calls[self._advance()] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        index = self._advance()
        allowed = self._ratio * sum(self._calls) + self._floor
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[index] += 1
        return True
