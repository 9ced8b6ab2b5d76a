"""Failures any layer may raise, in plain Python: no gRPC, no driver in sight.

Infra raises them (a store that does not answer, a request already in flight), domain
code catches or lets them pass, and one table at the gRPC edge
(`blueprint.mesh.errors.status_for`) turns each into its status code with
`google.rpc` details. A new failure kind is added here and there, nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class StoreUnavailable(Exception):
    """A data store (database, Redis, blob store) did not answer, or its circuit breaker
    is open. Nothing the caller sent is wrong: the call may be retried (UNAVAILABLE),
    after `retry_after` seconds when the store's breaker says how long it stays open."""

    def __init__(self, dependency: str, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency
        self.reason = reason
        self.retry_after = retry_after


class Aborted(Exception):
    """Another attempt of the same request is being worked on right now: try again after
    `retry_after` seconds (ABORTED with RetryInfo), and the answer will be that attempt's."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Violation:
    """One unmet precondition: its kind, what it is about, and why (google.rpc's
    PreconditionFailure.Violation); `field` names the request field to change, if one."""

    type: str
    subject: str
    description: str
    field: str = ""


class PreconditionFailed(Exception):
    """The request cannot be served in the state things are in (FAILED_PRECONDITION):
    repeating it unchanged will fail again."""

    def __init__(self, message: str, violations: Sequence[Violation]) -> None:
        if not violations:
            raise ValueError("PreconditionFailed needs at least one violation")
        super().__init__(message)
        self.violations = tuple(violations)
