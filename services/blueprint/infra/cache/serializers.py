"""How cached values become bytes and back; JSON unless a service says otherwise."""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class SerializationError(ValueError):
    """A value that cannot be stored, or stored bytes that cannot be read back."""


class Serializer(Protocol[T]):
    def dumps(self, value: T) -> bytes: ...

    def loads(self, data: bytes) -> T: ...


class JsonSerializer:
    """Any JSON value (dict, list, str, number, bool); compact, UTF-8."""

    def dumps(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"value is not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise SerializationError(f"stored value is not JSON: {exc}") from exc


class BytesSerializer:
    """Bytes as they are."""

    def dumps(self, value: bytes) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise SerializationError(f"expected bytes, got {type(value).__name__}")
        return bytes(value)

    def loads(self, data: bytes) -> bytes:
        return data


class StrSerializer:
    """Text as UTF-8."""

    def dumps(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise SerializationError(f"expected str, got {type(value).__name__}")
        return value.encode()

    def loads(self, data: bytes) -> str:
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise SerializationError(f"stored value is not UTF-8: {exc}") from exc
