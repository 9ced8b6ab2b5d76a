"""What the protos say about a method, looked up once per method path."""

from __future__ import annotations

import functools

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

_SAFE_TO_REPEAT = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
}
IDEMPOTENCY_KEY_FIELD = "idempotency_key"


@functools.cache
def is_idempotent(path: str) -> bool:
    """True when `/pkg.Service/Method` declares `idempotency_level` NO_SIDE_EFFECTS or IDEMPOTENT.

    The proto is the one place both sides agree on; a method that says nothing
    is treated as unsafe to repeat.
    """
    method = _method(path)
    return method is not None and method.GetOptions().idempotency_level in _SAFE_TO_REPEAT


@functools.cache
def takes_idempotency_key(path: str) -> bool:
    """True when the method's request message has a string `idempotency_key` field: a
    mutation the server deduplicates by key, so repeating it with the key is safe."""
    method = _method(path)
    if method is None:
        return False
    field = method.input_type.fields_by_name.get(IDEMPOTENCY_KEY_FIELD)
    return field is not None and field.type == descriptor.FieldDescriptor.TYPE_STRING


def _method(path: str) -> descriptor.MethodDescriptor | None:
    service_name, _, method_name = path.lstrip("/").partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return None
    return service.methods_by_name.get(method_name)
