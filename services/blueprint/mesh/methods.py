"""What the protos say about a method, looked up once per method path."""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool

_SAFE_TO_REPEAT = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
}


@functools.cache
def is_idempotent(path: str) -> bool:
    """True when `/pkg.Service/Method` declares `idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT.

    The proto is the one place both sides agree on; a method that says nothing
    is treated as unsafe to repeat.
    """
    service_name, _, method_name = path.lstrip("/").partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return False
    method = service.methods_by_name.get(method_name)
    if method is None:
        return False
    return method.GetOptions().idempotency_level in _SAFE_TO_REPEAT
