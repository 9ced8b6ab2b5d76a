"""Hostile requests for any message type, built from its descriptor alone.

What a careless or malicious client can send: every scalar at its extremes, strings
that are huge, invisible, right-to-left, NUL-laden or shaped like paths and SQL,
Durations and Timestamps outside their types' ranges, repeated fields with thousands
of entries, nesting as deep as the type allows, and bytes that are not a message at
all. Works from descriptors (as reflection returns them), so a new service is swept
without a line written for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from google.protobuf import descriptor, message, message_factory
from hypothesis import strategies as st

Field = descriptor.FieldDescriptor
MIB = 1 << 20
MAX_DEPTH = 3  # nesting of generated messages; `undecodable` goes far deeper in raw bytes
MANY = 10_000  # entries of a repeated field

_INT32 = [-(2**31), -1, 0, 1, 2**31 - 1]
_INT64 = [-(2**63), -(2**31) - 1, -1, 0, 1, 2**31, 2**63 - 1]
_UINT32 = [0, 1, 2**32 - 1]
_UINT64 = [0, 1, 2**63, 2**64 - 1]
INTEGERS: dict[int, list[int]] = {
    **dict.fromkeys((Field.TYPE_INT32, Field.TYPE_SINT32, Field.TYPE_SFIXED32), _INT32),
    **dict.fromkeys((Field.TYPE_INT64, Field.TYPE_SINT64, Field.TYPE_SFIXED64), _INT64),
    **dict.fromkeys((Field.TYPE_UINT32, Field.TYPE_FIXED32), _UINT32),
    **dict.fromkeys((Field.TYPE_UINT64, Field.TYPE_FIXED64), _UINT64),
    Field.TYPE_ENUM: [-(2**31), -1, 0, 1, 99, 2**31 - 1],  # proto3 enums take any int32
}
_INTEGER_RANGES = {kind: (min(values), max(values)) for kind, values in INTEGERS.items()}
FLOATS = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, -1.0]

STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 1024,
    "x" * MIB,  # 1 MiB
    "é" * (MIB // 2),  # 1 MiB of two-byte characters
    "\U0001f4a9" * 4096,  # outside the BMP: four bytes each
    "e\u0301" * 4096,  # combining marks
    "\u202eevil\u202c",  # right-to-left override
    "\u200f\u200e\u200d\u200b\ufeff",  # RTL/LTR marks, zero-width joiner and space, BOM
    "\uffff\U0010ffff",  # noncharacters
    "\x1b[31m\x7f\x08",  # terminal escapes, DEL, backspace
    "\r\nX-Injected: 1",
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2f%00",
    "'; DROP TABLE links; --",
    '" OR 1=1 --',
    "${jndi:ldap://127.0.0.1/x}",
    "{{7*7}}<script>alert(1)</script>",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "http://user:pass@127.0.0.1:6379/",
    "https://exa\u202emple.com/" + "a" * 5000,
    "https://xn--80ak6aa92e.com/\u0000",
    "\uff41\uff44\uff4d\uff49\uff4e",  # fullwidth "admin"
    "p\u0430ypal",  # Cyrillic a
    "diag",
    "a" * 64,
    "-1",
    "NaN",
    "null",
]
BYTES = [b"", b"\x00", bytes(range(256)), b"\xff" * MIB]
# (seconds, nanos): beyond the Duration range, at its edges, nanos of the other sign.
DURATIONS = [
    (2**63 - 1, 0),
    (-(2**63), 0),
    (315_576_000_001, 0),
    (315_576_000_000, 999_999_999),
    (-315_576_000_000, -999_999_999),
    (0, -1),
    (0, 2**31 - 1),
    (0, -(2**31)),
    (1, -1),
    (-1, 1),
    (0, 1_000_000_000),
    (0, 0),
    (0, 1),
    (10, 0),
]
TIMESTAMPS = [
    (2**63 - 1, 0),
    (-(2**63), 0),
    (-62_135_596_801, 0),  # the second before 0001-01-01
    (253_402_300_800, 0),  # the second after 9999-12-31T23:59:59
    (0, -1),
    (0, 2**31 - 1),
    (0, 0),
]
_WELL_KNOWN = {"google.protobuf.Duration": DURATIONS, "google.protobuf.Timestamp": TIMESTAMPS}
_SHORT_STRINGS = [s for s in STRINGS if len(s.encode()) <= 256]


def message_class(desc: descriptor.Descriptor) -> type[message.Message]:
    return message_factory.GetMessageClass(desc)


def _is_map(field: Field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _scalars(field: Field) -> list[Any]:
    kind = field.type
    if kind in INTEGERS:
        return INTEGERS[kind]
    if kind in (Field.TYPE_FLOAT, Field.TYPE_DOUBLE):
        return FLOATS
    if kind == Field.TYPE_BOOL:
        return [True, False]
    if kind == Field.TYPE_STRING:
        return STRINGS
    if kind == Field.TYPE_BYTES:
        return BYTES
    raise AssertionError(f"no hostile values for {field.full_name} (type {kind})")


def values(field: Field, depth: int = 0) -> list[Any]:
    """Hostile values for one (singular) occurrence of `field`."""
    if field.message_type is None:
        return _scalars(field)
    cls = message_class(field.message_type)
    edges = _WELL_KNOWN.get(field.message_type.full_name)
    if edges is not None:
        return [cls(seconds=seconds, nanos=nanos) for seconds, nanos in edges]
    if depth >= MAX_DEPTH:
        return [cls()]
    return [cls(), *(built for _, built in one_field_at_a_time(field.message_type, depth + 1))]


def _assign(target: message.Message, field: Field, value: Any) -> None:
    if field.message_type is not None:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def _short(value: Any) -> bool:
    return not isinstance(value, str | bytes) or len(value) <= 256


def one_field_at_a_time(
    desc: descriptor.Descriptor, depth: int = 0
) -> Iterator[tuple[str, message.Message]]:
    """(label, message) with one field hostile and the rest unset; then every field at once."""
    cls = message_class(desc)
    everything = cls()
    for field in desc.fields:
        if _is_map(field):
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                (field.message_type.fields_by_name["value"]),
            )
            built = cls()
            entries = getattr(built, field.name)
            for key in [k for k in _scalars(key_field) if _short(k)][:MANY]:
                for value in values(value_field, depth + 1)[:3]:
                    if value_field.message_type is not None:
                        entries[key].CopyFrom(value)
                    else:
                        entries[key] = value
            yield f"{field.name}: map of hostile entries", built
            continue
        options = values(field, depth)
        if field.is_repeated:
            short = [v for v in options if _short(v)]
            for label, entries in [
                ("one hostile entry each", None),
                (f"{MANY} entries", [short[0]] * MANY),
                ("every short hostile value", short),
            ]:
                if entries is None:
                    for value in options:
                        built = cls()
                        getattr(built, field.name).extend([value])
                        yield f"{field.name}: [{_show(value)}]", built
                else:
                    built = cls()
                    getattr(built, field.name).extend(entries)
                    yield f"{field.name}: {label}", built
            getattr(everything, field.name).extend(short)
            continue
        for value in options:
            built = cls()
            _assign(built, field, value)
            yield f"{field.name}={_show(value)}", built
        if field.containing_oneof is None:
            _assign(everything, field, options[0])
    yield "every field hostile at once", everything


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, message.Message) else str(value).replace("\n", " ")
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} chars)"


def _random(field: Field) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[kind]
        return st.integers(low, high)
    if kind in (Field.TYPE_FLOAT, Field.TYPE_DOUBLE):
        return st.floats(width=32 if kind == Field.TYPE_FLOAT else 64)
    if kind == Field.TYPE_BOOL:
        return st.booleans()
    if kind == Field.TYPE_STRING:
        return st.text(max_size=64)
    return st.binary(max_size=64)


def _value_strategy(field: Field, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is None:
        return st.sampled_from(_scalars(field)) | _random(field)
    if field.message_type.full_name in _WELL_KNOWN:
        cls = message_class(field.message_type)
        pairs = st.sampled_from(_WELL_KNOWN[field.message_type.full_name]) | st.tuples(
            st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1)
        )
        return pairs.map(lambda pair: cls(seconds=pair[0], nanos=pair[1]))
    return messages(field.message_type, depth + 1)


def messages(desc: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[message.Message]:
    """Random messages of `desc`: any mix of fields, each hostile or random."""
    cls = message_class(desc)
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if _is_map(field):
            continue  # covered by one_field_at_a_time; random maps add little
        single = _value_strategy(field, depth)
        optional[field.name] = st.lists(single, max_size=20) if field.is_repeated else single

    def build(chosen: dict[str, Any]) -> message.Message:
        built = cls()
        for name, value in chosen.items():
            field = desc.fields_by_name[name]
            if field.is_repeated:
                getattr(built, name).extend(value)
            else:
                _assign(built, field, value)
        return built

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def undecodable(desc: descriptor.Descriptor) -> Iterator[tuple[str, bytes]]:
    """(label, bytes) that are not a valid `desc`, and bytes no message fits."""
    yield "garbage", b"\xff" * 16
    yield "field number 0", b"\x00\x01"
    yield "truncated varint", b"\x08\xff\xff"
    yield "length past the end", b"\x0a\x7fabc"
    yield "end-group without start", _tag(1, 4)
    yield "groups nested 100,000 deep", _tag(1000, 3) * 100_000
    yield "5 MiB (over gRPC's 4 MiB limit)", b"\x00" * (5 * MIB)
    for field in desc.fields:
        if field.type == Field.TYPE_STRING:
            yield f"{field.name}: invalid UTF-8", _tag(field.number, 2) + b"\x02\xff\xfe"
            yield f"{field.name}: a lone surrogate", _tag(field.number, 2) + b"\x03\xed\xa0\x80"
        if field.message_type is not None:
            inner = _tag(1, 2) + b"\x05ab"  # a length past the end, inside the field
            yield (
                f"{field.name}: corrupt inside",
                _tag(field.number, 2) + _varint(len(inner)) + inner,
            )
        if field.is_repeated and field.type not in (Field.TYPE_STRING, Field.TYPE_BYTES):
            yield f"{field.name}: packed, cut short", _tag(field.number, 2) + b"\x0a\x01"
