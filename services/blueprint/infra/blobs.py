"""Blob storage: bytes by key, for what is too big to keep in a database row.

`BlobStore` is the interface a service codes against (an object store such as S3 fits
it: put, get, delete by key); `LocalBlobStore` keeps each blob as a file under one
directory, the default for one machine (`blueprint up`). Replicas on one machine share
the directory; replicas on several machines need a shared store behind the interface.

Keys are relative paths of safe segments (`pastes/7kTq0xA2Bc`), checked here, so no
key can reach outside the store's directory. A file system that fails (full, read-only,
an unmounted share) raises `StoreUnavailable`, like any store that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from blueprint.infra.outages import translated

MAX_KEY_LENGTH = 512
DEPENDENCY = "blobs"
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class BlobNotFound(LookupError):
    """No blob under the key."""


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there; atomic for readers."""

    async def get(self, key: str) -> bytes:
        """The blob under `key`; `BlobNotFound` if there is none."""

    async def delete(self, key: str) -> bool:
        """Remove the blob; False if there was none."""


def check_key(key: str) -> str:
    """`key` if it is a relative path of safe segments; ValueError naming the problem if not."""
    if not isinstance(key, str) or not key:
        raise ValueError("blob key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"blob key longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        # A leading dot is refused too: no ".", "..", nor hidden files.
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"blob key {key[:80]!r}: each '/'-separated part must be letters, digits, "
                "'_', '-' or '.', not starting with '.'"
            )
    return key


class LocalBlobStore:
    """Blobs as files under `root`; file I/O runs on a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        with translated(DEPENDENCY):
            await asyncio.to_thread(self._put, path, bytes(data))

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        with translated(DEPENDENCY):
            return await asyncio.to_thread(self._get, path, key)

    async def delete(self, key: str) -> bool:
        path = self.path(key)
        with translated(DEPENDENCY):
            return await asyncio.to_thread(self._delete, path)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed over it: a reader sees the old blob or
        # the whole new one, and a crash mid-write leaves only a temporary file behind.
        descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @staticmethod
    def _get(path: Path, key: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key!r}") from None

    @staticmethod
    def _delete(path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
