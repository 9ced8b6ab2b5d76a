"""Pastes: text stored under a code, small ones in the row, large ones as blobs.

The guide's pastes table keeps `content TEXT -- or S3 key if large`: a database row is
cheap to read and replicate while small, and a megabyte in every row would swell the
table, its replicas and its backups. Above `inline_max_bytes` the content goes to the
blob store first and the row keeps its key; the row is written after the blob, so a row
never points at a blob that was not written (a failed insert deletes the blob again).

CreatePaste with an idempotency key runs once per key, like Shorten: its plan pins the
paste id (hence the code and blob key) and the creation time, so a resumed attempt
rewrites the same blob with the same bytes and finds its own row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Protocol

from blueprint.infra.blobs import BlobNotFound, BlobStore
from blueprint.infra.idempotency import Keyed, Records, run_once
from blueprint.infra.ids import base62
from blueprint.mesh.errors import NotFound
from blueprint.shortener.errors import Refused
from blueprint.shortener.links import IdSource
from blueprint.shortener.records import Paste, utc_now

log = logging.getLogger(__name__)

DEFAULT_LANGUAGE = "text"
CREATE_PASTE = "shortener.CreatePaste"  # the idempotency scope of CreatePaste's keys
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
    async def insert_paste(self, paste: Paste, idempotency_key: str | None = None) -> Paste: ...
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
        records: Records | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if inline_max_bytes < 0:
            raise ValueError("inline_max_bytes must be >= 0")
        self._store = store
        self._ids = ids
        self._blobs = blobs
        self._records = records
        self._inline_max_bytes = inline_max_bytes
        self._clock = clock

    async def create(
        self, content: str, language: str, ttl: timedelta | None, keyed: Keyed | None = None
    ) -> Paste:
        """A new paste (its content left out of the answer); with `keyed`, once per
        idempotency key, as `LinkService.shorten`."""
        plan = json.dumps({"id": await self._ids.next_id(), "at": self._clock().isoformat()})
        if keyed is None:
            return await self._create_as_planned(plan.encode(), content, language, ttl, None)
        if self._records is None:
            raise RuntimeError("PasteService needs records to take idempotency keys")

        async def work(pinned: bytes) -> bytes:
            paste = await self._create_as_planned(pinned, content, language, ttl, keyed.key)
            return _encode(paste)

        return _decode(await run_once(self._records, CREATE_PASTE, keyed, plan.encode(), work))

    async def _create_as_planned(
        self,
        plan: bytes,
        content: str,
        language: str,
        ttl: timedelta | None,
        idempotency_key: str | None,
    ) -> Paste:
        pinned = json.loads(plan)
        paste_id, now = int(pinned["id"]), datetime.fromisoformat(pinned["at"])
        data = content.encode()
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
            return await self._store.insert_paste(paste, idempotency_key)
        await self._blobs.put(blob, data)
        try:
            return await self._store.insert_paste(paste, idempotency_key)
        except BaseException:
            if idempotency_key is None:
                # Keyed: a retry may still insert the row, and would find no blob.
                await self._blobs.delete(blob)
            raise

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


def _encode(paste: Paste) -> bytes:
    fields = asdict(replace(paste, content=None))  # the answer never carries the content
    for name in ("created_at", "expires_at"):
        fields[name] = fields[name].isoformat() if fields[name] else None
    return json.dumps(fields).encode()


def _decode(data: bytes) -> Paste:
    fields = json.loads(data)
    for name in ("created_at", "expires_at"):
        fields[name] = datetime.fromisoformat(fields[name]) if fields[name] else None
    return Paste(**fields)
