"""Queue message layout, key names and the worker registry: round trips and clear refusals."""

from __future__ import annotations

import json

import pytest

from blueprint.infra.queue import BatchHandler, ConsumerOptions, Priority
from blueprint.infra.queue.keys import QueueKeys
from blueprint.infra.queue.message import Envelope, MalformedEntry, encode_payload
from blueprint.infra.queue.registry import BadHandlerPath, HandlerSpec, UnknownWorker, load
from blueprint.infra.queue.runtime import consumer_prefix
from blueprint.infra.queue.settings import consumer_options
from blueprint.mesh.settings import Settings
from blueprint.shortener.worker import ClickCounter


def test_envelope_round_trips_through_stream_fields() -> None:
    envelope = Envelope("m1", '{"a":1}', prior=2, published_at_ms=1_700_000_000_123, error="E: x")
    raw = {k.encode(): v.encode() for k, v in envelope.fields().items()}
    assert Envelope.from_fields(raw) == envelope


def test_delayed_member_names_its_priority_and_keeps_every_field_as_text() -> None:
    member = json.loads(Envelope("m1", "[1]", 3, 42).delayed_member(Priority.LOW))
    assert member == {
        "p": "2", "mid": "m1", "payload": "[1]", "prior": "3", "published_at": "42", "error": ""
    }  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {b"mid": b"m"},
        {b"mid": b"m", b"payload": b"1", b"prior": b"x", b"published_at": b"1"},
    ],
)
def test_foreign_entries_are_refused(raw: dict[bytes, bytes] | None) -> None:
    with pytest.raises(MalformedEntry):
        Envelope.from_fields(raw)


def test_payloads_must_be_json_and_fit() -> None:
    assert encode_payload({"b": [1, "ü"]}, 100) == '{"b":[1,"\\u00fc"]}'
    with pytest.raises(ValueError, match="JSON-serializable"):
        encode_payload({"x": object()}, 100)
    with pytest.raises(ValueError, match="JSON-serializable"):
        encode_payload(float("nan"), 100)
    with pytest.raises(ValueError, match="limit is 10"):
        encode_payload("x" * 20, 10)


def test_keys_share_one_hash_tag_and_validate_names() -> None:
    keys = QueueKeys("bp", "clicks")
    assert keys.streams == [
        "bp:queue:{clicks}:high",
        "bp:queue:{clicks}:normal",
        "bp:queue:{clicks}:low",
    ]
    assert keys.delayed == "bp:queue:{clicks}:delayed"
    assert keys.dead == "bp:queue:{clicks}:dead"
    assert keys.processed("g", "m1") == "bp:queue:{clicks}:done:g:m1"
    for bad in ("", "has space", "a{b}", "x" * 101, "é"):
        with pytest.raises(ValueError, match="stream name"):
            QueueKeys("bp", bad)
    with pytest.raises(ValueError, match="prefix"):
        QueueKeys("b{p}", "clicks")


def test_consumer_options_are_checked() -> None:
    with pytest.raises(ValueError, match="visibility_timeout_seconds"):
        ConsumerOptions(visibility_timeout_seconds=0)
    with pytest.raises(ValueError, match="handler_timeout_seconds"):
        ConsumerOptions(handler_timeout_seconds=0)
    for size in (0, 1001):
        with pytest.raises(ValueError, match="batch_size"):
            ConsumerOptions(batch_size=size)
    with pytest.raises(ValueError, match="batch_max_wait_seconds"):
        ConsumerOptions(batch_max_wait_seconds=-1)


def test_batch_settings_reach_the_consumer() -> None:
    settings = Settings(queue_batch_size=250, queue_batch_max_wait_seconds=0.2)
    options = consumer_options(settings)
    assert (options.batch_size, options.batch_max_wait_seconds) == (250, 0.2)


def test_the_click_worker_is_a_batch_handler() -> None:
    assert isinstance(ClickCounter(None), BatchHandler)  # type: ignore[arg-type]


def test_registry_finds_specs_by_import_path() -> None:
    spec = load("example", {"example": "support.example_queue_handlers:SPEC"})
    assert isinstance(spec, HandlerSpec) and spec.stream == "example-jobs"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon", "is not 'module:attribute'"),
        ("no.such.module:SPEC", "cannot import 'no.such.module'"),
        ("support.example_queue_handlers:NOPE", "is nothing, not a HandlerSpec"),
        ("support.example_queue_handlers:STREAM", "is str, not a HandlerSpec"),
    ],
)
def test_registry_explains_bad_paths(path: str, message: str) -> None:
    with pytest.raises(BadHandlerPath, match=message):
        load("w", {"w": path})


def test_registry_lists_known_names_for_an_unknown_one() -> None:
    with pytest.raises(UnknownWorker, match=r"unknown worker 'nope'; workers: .*example"):
        load("nope", {"example": "support.example_queue_handlers:SPEC"})


def test_consumer_names_are_made_safe() -> None:
    assert consumer_prefix("clicks", "pod/\u00e9 1") == "pod---1"
    assert consumer_prefix("clicks", None).startswith("clicks-")
