"""Domain errors and their one translation into gRPC statuses with rich details.

Domain code raises these; the server runtime's error mapping turns them into
statuses carrying `google.rpc` details (grpcio-status), so servicers never
build statuses by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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
