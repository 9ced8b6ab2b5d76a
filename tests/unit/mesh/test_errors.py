from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from blueprint.errors import Aborted, PreconditionFailed, StoreUnavailable, Violation
from blueprint.mesh.errors import FieldChecks, InvalidArgument, NotFound, status_for


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


def test_a_store_that_did_not_answer_is_unavailable_with_when_to_retry() -> None:
    status = status_for(StoreUnavailable("shortener/shard-0/writer", "reset", retry_after=2.5))
    assert status is not None and status.code == grpc.StatusCode.UNAVAILABLE
    retry, info = error_details_pb2.RetryInfo(), error_details_pb2.ErrorInfo()
    details = _status(status).details
    assert details[0].Unpack(retry) and details[1].Unpack(info)
    assert retry.retry_delay.ToMilliseconds() == 2500
    assert info.reason == "STORE_UNAVAILABLE"
    assert info.metadata["dependency"] == "shortener/shard-0/writer"


def test_an_attempt_in_flight_is_aborted_with_retry_info() -> None:
    status = status_for(Aborted("another attempt is running", retry_after=0.75))
    assert status is not None and status.code == grpc.StatusCode.ABORTED
    retry = error_details_pb2.RetryInfo()
    assert _status(status).details[0].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 750


def test_a_failed_precondition_names_its_violation_and_field() -> None:
    violation = Violation("IDEMPOTENCY_KEY_REUSED", "idempotency_key k1", "other body", "key")
    status = status_for(PreconditionFailed("key reused", [violation]))
    assert status is not None and status.code == grpc.StatusCode.FAILED_PRECONDITION
    failure, bad_request = error_details_pb2.PreconditionFailure(), error_details_pb2.BadRequest()
    details = _status(status).details
    assert details[0].Unpack(failure) and details[1].Unpack(bad_request)
    assert failure.violations[0].type == "IDEMPOTENCY_KEY_REUSED"
    assert bad_request.field_violations[0].field == "key"


def test_anything_else_has_no_status_so_it_is_a_bug() -> None:
    assert status_for(KeyError("x")) is None
    assert status_for(NotFound("gone")).code == grpc.StatusCode.NOT_FOUND  # type: ignore[union-attr]
