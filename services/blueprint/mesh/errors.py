"""Domain errors and their one translation into gRPC statuses with rich details.

Domain code raises these, or the plain failures of `blueprint.errors`; the server
runtime's error mapping (`status_for`) turns them into statuses carrying `google.rpc`
details (grpcio-status), so servicers never build statuses by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from blueprint.errors import Aborted, PreconditionFailed, StoreUnavailable

ERROR_DOMAIN = "blueprint"
# ErrorInfo reason of a call the server shed before running it: safe to send again,
# idempotent or not, since nothing was done.
OVERLOADED_REASON = "OVERLOADED"
T = TypeVar("T")


class Refused(ValueError):
    """A validator's plain "no, because ..." about one value; `FieldChecks.check` names
    the request field it came from."""


class DomainError(Exception):
    """Base for errors a client caused or may act on; never INTERNAL."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(code=self.code.value[0], message=str(self))
        return rpc_status.to_status(status)


class InvalidArgument(DomainError):
    """One or more request fields are wrong; each violation names its field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Mapping[str, str]) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        self.violations = dict(violations)
        summary = "; ".join(f"{field}: {why}" for field, why in self.violations.items())
        super().__init__(f"invalid request: {summary}")

    def to_status(self) -> grpc.Status:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=why)
                for field, why in self.violations.items()
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message=str(self), details=[detail]
        )
        return rpc_status.to_status(status)


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FieldChecks:
    """Collects every violation in a request before failing, so a client fixes all at once."""

    def __init__(self) -> None:
        self._violations: dict[str, str] = {}

    def require(self, ok: bool, field: str, why: str) -> None:
        if not ok and field not in self._violations:
            self._violations[field] = why

    def check(self, field: str, validate: Callable[[], T]) -> T | None:
        """`validate()`'s value, or None with the violation noted when it refused."""
        try:
            return validate()
        except Refused as refused:
            self.require(False, field, str(refused))
            return None

    def raise_if_any(self) -> None:
        if self._violations:
            raise InvalidArgument(self._violations)


def status_for(error: BaseException) -> grpc.Status | None:
    """The status a handler's error answers with; None for a bug (the runtime: INTERNAL).

    The one table from failures to statuses: domain errors carry their own, and each
    plain failure of `blueprint.errors` is mapped here.
    """
    if isinstance(error, DomainError):
        return error.to_status()
    if isinstance(error, StoreUnavailable):
        return _status(
            code_pb2.UNAVAILABLE,
            f"a data store did not answer ({error}); retry",
            _retry_info(error.retry_after),
            error_details_pb2.ErrorInfo(
                reason="STORE_UNAVAILABLE",
                domain=ERROR_DOMAIN,
                metadata={"dependency": error.dependency},
            ),
        )
    if isinstance(error, Aborted):
        return _status(code_pb2.ABORTED, str(error), _retry_info(error.retry_after))
    if isinstance(error, PreconditionFailed):
        fields = [v for v in error.violations if v.field]
        return _status(
            code_pb2.FAILED_PRECONDITION,
            str(error),
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in error.violations
                ]
            ),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in fields
                ]
            )
            if fields
            else None,
        )
    return None


def overloaded_status(retry_after: float, limit: int) -> grpc.Status:
    """RESOURCE_EXHAUSTED for a call shed by the admission gate (`mesh.admission`)."""
    return _status(
        code_pb2.RESOURCE_EXHAUSTED,
        f"server overloaded (running {limit} calls at once); retry in {retry_after:.2f} s",
        _retry_info(retry_after),
        error_details_pb2.ErrorInfo(
            reason=OVERLOADED_REASON, domain=ERROR_DOMAIN, metadata={"limit": str(limit)}
        ),
    )


def _retry_info(seconds: float | None) -> error_details_pb2.RetryInfo | None:
    if seconds is None:
        return None
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(0, round(seconds * 1e9)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _status(code: int, text: str, *details: message.Message | None) -> grpc.Status:
    packed = []
    for detail in details:
        if detail is not None:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=text, details=packed))
