"""What the shortener refuses, and the statuses those refusals become.

`Refused` (the mesh's) is a validator's plain "no, because …"; `checks.py` attaches the
request field and raises INVALID_ARGUMENT. The rest are `DomainError`s the server runtime maps
to their statuses.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from blueprint.mesh.errors import AlreadyExists, DomainError, Refused

__all__ = [
    "AliasTaken",
    "CodeTaken",
    "CodesExhausted",
    "PermissionDenied",
    "Refused",
]

LINK_TYPE = "blueprint.shortener.v1.Link"


class CodeTaken(Exception):
    """Another row already holds this code (the store's unique key said so)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"code {code!r} is taken")
        self.code = code


class AliasTaken(AlreadyExists):
    """A custom alias someone already holds. Names the field (BadRequest) and the taken
    resource (ResourceInfo), so a client can point at the input to change."""

    def __init__(self, field: str, alias: str) -> None:
        self.field = field
        self.alias = alias
        super().__init__(f"{field}: {alias!r} is taken; choose another")

    def to_status(self) -> grpc.Status:
        details = []
        for detail in (
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=self.field, description=f"{self.alias!r} is taken"
                    )
                ]
            ),
            error_details_pb2.ResourceInfo(
                resource_type=LINK_TYPE, resource_name=self.alias, description="exists"
            ),
        ):
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
        status = status_pb2.Status(code=code_pb2.ALREADY_EXISTS, message=str(self), details=details)
        return rpc_status.to_status(status)


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class CodesExhausted(DomainError):
    """Every code the scheme allows for this URL is taken (hash scheme, popular URL)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
