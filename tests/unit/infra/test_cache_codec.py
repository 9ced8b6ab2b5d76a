"""Cache entries and serializers: round trips, and clear errors for what does not fit."""

from __future__ import annotations

import pytest

from blueprint.infra.cache import BytesSerializer, JsonSerializer, SerializationError, StrSerializer
from blueprint.infra.cache.entry import CorruptEntry, Entry


def test_entry_round_trips_with_its_xfetch_fields() -> None:
    entry = Entry(b'{"a":1}', delta=0.125, expiry=1_700_000_000.5)
    assert Entry.decode(entry.encode()) == entry
    negative = Entry(b"", delta=0.01, expiry=5.0, negative=True)
    assert Entry.decode(negative.encode()) == negative


@pytest.mark.parametrize("raw", [b"", b"C1", b"XX" + bytes(17), b"plain old value"])
def test_foreign_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(CorruptEntry):
        Entry.decode(raw)


def test_json_serializer_round_trips_and_refuses_what_json_cannot_hold() -> None:
    json = JsonSerializer()
    value = {"url": "https://example.com/ä", "clicks": [1, 2], "ok": True, "none": None}
    assert json.loads(json.dumps(value)) == value
    with pytest.raises(SerializationError, match="JSON-serializable"):
        json.dumps({"when": object()})
    with pytest.raises(SerializationError, match="not JSON"):
        json.loads(b"\xff{")


def test_bytes_and_str_serializers_check_types() -> None:
    assert BytesSerializer().loads(BytesSerializer().dumps(b"\x00\xff")) == b"\x00\xff"
    assert StrSerializer().loads(StrSerializer().dumps("héllo")) == "héllo"
    with pytest.raises(SerializationError, match="expected bytes"):
        BytesSerializer().dumps("text")  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="expected str"):
        StrSerializer().dumps(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="UTF-8"):
        StrSerializer().loads(b"\xff")
