"""Idempotency keys on the wire: their format, a fresh one for a call that has none, and
the digest of a request body without its key.

A mutating method opts in by a string `idempotency_key` field in its request
(`methods.takes_idempotency_key`). Clients of the mesh always send one: the mesh fills
in a random key when the caller left it empty, so every attempt of one call carries the
same key and the mesh may retry the call like an idempotent one. Servers compare the
body digest of a repeat with the first call's to tell a retry from a reuse of the key.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

from google.protobuf.message import Message

from blueprint.mesh.methods import IDEMPOTENCY_KEY_FIELD, takes_idempotency_key

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-:.]{1,128}$")
KEY_RULE = "1 to 128 ASCII letters, digits, '_', '-', ':' or '.'"


def with_key(path: str, request: Any) -> tuple[Any, bool]:
    """The request to send for `path`, and whether it carries an idempotency key.

    A request whose method takes a key but came without one is copied with a fresh
    uuid4 key (the caller's message is never changed)."""
    if not takes_idempotency_key(path) or not isinstance(request, Message):
        return request, False
    if getattr(request, IDEMPOTENCY_KEY_FIELD):
        return request, True
    keyed = type(request)()
    keyed.CopyFrom(request)
    setattr(keyed, IDEMPOTENCY_KEY_FIELD, str(uuid.uuid4()))
    return keyed, True


def body_digest(request: Message) -> str:
    """sha256 (hex) of the request as deterministic wire bytes, its key left out: equal
    for a retry of the same request, different when any other field differs."""
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField(IDEMPOTENCY_KEY_FIELD)
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()
