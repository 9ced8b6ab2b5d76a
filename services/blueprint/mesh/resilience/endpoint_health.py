"""Whether one endpoint should get calls now: breaker, outlier ejection, transport quarantine."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from blueprint.mesh.resilience.breaker import BreakerState, CircuitBreaker
from blueprint.mesh.resilience.ejection import OutlierTracker

# Outcomes that say something about the endpoint. A client's mistake
# (INVALID_ARGUMENT, NOT_FOUND, ...) or a refusal by policy (RESOURCE_EXHAUSTED
# from a rate limiter, PERMISSION_DENIED) says the endpoint is working.
ENDPOINT_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


class EndpointHealth:
    def __init__(
        self,
        breaker: CircuitBreaker,
        outlier: OutlierTracker,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker = breaker
        self.outlier = outlier
        self._clock = clock
        self.quarantined_until = 0.0

    def quarantine(self, seconds: float) -> None:
        """The transport to it failed: skip it until discovery catches up or time passes."""
        self.quarantined_until = self._clock() + seconds

    def impaired(self) -> bool:
        """Anything other than fully healthy (the pool watches these more closely)."""
        return (
            self.breaker.state is not BreakerState.CLOSED
            or self.outlier.is_ejected()
            or self._clock() < self.quarantined_until
        )

    def available(self) -> bool:
        if self._clock() < self.quarantined_until or self.outlier.is_ejected():
            return False
        return self.breaker.allows_call()
