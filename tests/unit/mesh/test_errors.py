from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from blueprint.mesh.errors import FieldChecks, InvalidArgument, NotFound


def _status(status: grpc.Status) -> status_pb2.Status:
    ((key, value),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    return status_pb2.Status.FromString(value)


def test_invalid_argument_carries_a_bad_request_per_field() -> None:
    status = InvalidArgument({"url": "must be http or https", "alias": "taken"}).to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    detail = error_details_pb2.BadRequest()
    assert _status(status).details[0].Unpack(detail)
    assert [(v.field, v.description) for v in detail.field_violations] == [
        ("url", "must be http or https"),
        ("alias", "taken"),
    ]


def test_other_domain_errors_map_to_their_codes() -> None:
    status = NotFound("link abc not found").to_status()
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert status.details == "link abc not found"


def test_field_checks_collect_every_violation_once() -> None:
    checks = FieldChecks()
    checks.require(True, "a", "fine")
    checks.require(False, "b", "first reason")
    checks.require(False, "b", "second reason")
    checks.require(False, "c", "bad")
    with pytest.raises(InvalidArgument) as raised:
        checks.raise_if_any()
    assert raised.value.violations == {"b": "first reason", "c": "bad"}


def test_an_invalid_argument_without_violations_is_a_bug() -> None:
    with pytest.raises(ValueError):
        InvalidArgument({})
