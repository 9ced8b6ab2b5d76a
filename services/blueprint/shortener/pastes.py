"""Pastes: text stored under a code, small ones in the row, large ones as blobs.

The guide's pastes table keeps `content TEXT -- or S3 key if large`: a database row is
cheap to read and replicate while small, and a megabyte in every row would swell the
table, its replicas and its backups. Above `inline_max_bytes` the content goes to the
blob store first and the row keeps its key; the row is written after the blob, so a row
never points at a blob that was not written (a failed insert deletes the blob again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from blueprint.infra.blobs import BlobNotFound, BlobStore
from blueprint.infra.ids import base62
from blueprint.mesh.errors import NotFound
from blueprint.shortener.errors import Refused
from blueprint.shortener.links import IdSource
from blueprint.shortener.records import Paste, utc_now

log = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "text"
# Highlighter names (Pygments' short names) a viewer can be expected to know.
LANGUAGES = frozenset(
    {
        "bash", "c", "clojure", "cpp", "csharp", "css", "dart", "diff", "dockerfile",
        "elixir", "erlang", "go", "graphql", "haskell", "html", "ini", "java", "javascript",
        "json", "jsx", "kotlin", "lua", "makefile", "markdown", "nginx", "ocaml", "perl",
        "php", "powershell", "protobuf", "python", "r", "ruby", "rust", "scala", "shell",
        "sql", "swift", "terraform", "text", "toml", "tsx", "typescript", "xml", "yaml",
    }
)  # fmt: skip


def check_language(language: str) -> str:
    """The language name to store ("text" for none); `Refused` for an unknown one."""
    if not language:
        return DEFAULT_LANGUAGE
    if language not in LANGUAGES:
        shown = repr(language[:40]) + ("…" if len(language) > 40 else "")
        raise Refused(f"unknown language {shown}; one of: {', '.join(sorted(LANGUAGES))}")
    return language


def check_content(content: str, max_bytes: int) -> int:
    """The content's size in UTF-8 bytes; `Refused` if it is empty, too big or has NUL."""
    if not content:
        raise Refused("required")
    size = len(content.encode())
    if size > max_bytes:
        raise Refused(f"at most {max_bytes} bytes of UTF-8 (got {size})")
    if "\x00" in content:
        # PostgreSQL text cannot hold NUL; refusing it here keeps the stores alike.
        raise Refused("NUL characters (U+0000) cannot be stored")
    return size


class PasteStore(Protocol):
    async def insert_paste(self, paste: Paste) -> None: ...
    async def find_paste(self, code: str) -> Paste | None: ...


def blob_key(code: str) -> str:
    return f"pastes/{code}"


class PasteService:
    def __init__(
        self,
        store: PasteStore,
        ids: IdSource,
        blobs: BlobStore,
        *,
        inline_max_bytes: int = 32 * 1024,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if inline_max_bytes < 0:
            raise ValueError("inline_max_bytes must be >= 0")
        self._store = store
        self._ids = ids
        self._blobs = blobs
        self._inline_max_bytes = inline_max_bytes
        self._clock = clock

    async def create(self, content: str, language: str, ttl: timedelta | None) -> Paste:
        now = self._clock()
        data = content.encode()
        paste_id = await self._ids.next_id()
        code = base62.encode(paste_id)
        blob = blob_key(code) if len(data) > self._inline_max_bytes else None
        paste = Paste(
            code=code,
            id=paste_id,
            language=language,
            size_bytes=len(data),
            created_at=now,
            expires_at=now + ttl if ttl is not None else None,
            content=None if blob else content,
            blob_key=blob,
        )
        if blob is None:
            await self._store.insert_paste(paste)
            return paste
        await self._blobs.put(blob, data)
        try:
            await self._store.insert_paste(paste)
        except BaseException:
            await self._blobs.delete(blob)
            raise
        return paste

    async def get(self, code: str) -> tuple[Paste, str]:
        """The paste and its content."""
        paste = await self._store.find_paste(code)
        if paste is None:
            raise NotFound(f"no paste {code!r}")
        if paste.expired(self._clock()):
            raise NotFound(f"paste {code!r} has expired")
        if paste.content is not None:
            return paste, paste.content
        assert paste.blob_key is not None  # the table's check constraint: one or the other
        try:
            data = await self._blobs.get(paste.blob_key)
        except BlobNotFound:
            # Purged the moment it expired, or lost: either way it cannot be served.
            log.error("paste %r has no blob %r", code, paste.blob_key)
            raise NotFound(f"paste {code!r} has no content any more") from None
        return paste, data.decode()
