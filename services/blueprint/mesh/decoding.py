"""Request bytes that are not the method's message: INVALID_ARGUMENT, not UNKNOWN.

grpcio answers a deserializer's exception with UNKNOWN ("Unexpected <class
'DecodeError'>..."), as if the server had failed. So the runtime wraps each method's
deserializer: a message that does not parse becomes a marker, and the handler wrapper
refuses the marker before the servicer sees it. No field can be named when the bytes
are not a message, so the status carries the parser's reason instead of a BadRequest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from blueprint.mesh.errors import DomainError

Deserializer = Callable[[bytes], Any]


class UndecodableRequest(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


@dataclass(frozen=True, slots=True)
class _Undecodable:
    reason: str


def tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    """`deserializer`, answering a marker instead of raising on bytes that do not parse."""
    if deserializer is None:
        return None
    parse = deserializer

    def decode(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return _Undecodable(f"the request is not a valid message: {error}")

    return decode


def refuse_undecodable(request: Any) -> Any:
    """`request`, or UndecodableRequest if it did not parse."""
    if isinstance(request, _Undecodable):
        raise UndecodableRequest(request.reason)
    return request


async def refuse_undecodable_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that ends the call at the first message that did not parse."""
    async for request in requests:
        yield refuse_undecodable(request)
