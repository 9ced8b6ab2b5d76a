"""The Shortener servicer: request checks, domain calls, replies; nothing else.

Domain errors and plain failures become statuses in the server runtime
(`mesh.errors.status_for`); here only the store's "code taken" becomes the field-naming
ALREADY_EXISTS. A data store that does not answer raises `StoreUnavailable` from its
guard (UNAVAILABLE, retryable); the few paths no guard covers are translated by the same
classification (`infra.outages`) in `_serving`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2

from blueprint.infra.idempotency import Keyed
from blueprint.infra.outages import translated
from blueprint.infra.sql import caller_scope
from blueprint.mesh.idempotency import body_digest
from blueprint.mesh.server import Cleanup, ServiceSpec, ServingContext
from blueprint.shortener import checks
from blueprint.shortener.app import SERVICE, Shortener, open_shortener
from blueprint.shortener.errors import AliasTaken, CodeTaken
from blueprint.shortener.records import Link, Paste
from blueprint.shortener.v1 import shortener_pb2 as pb
from blueprint.shortener.v1 import shortener_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ShortenerServicer(shortener_pb2_grpc.ShortenerServicer):
    def __init__(self, shortener: Shortener, *, caller_header: str) -> None:
        self._links = shortener.links
        self._pastes = shortener.pastes
        self._limits = shortener.limits
        self._caller_header = caller_header

    async def Shorten(self, request: pb.ShortenRequest, context: Context) -> pb.ShortenResponse:
        ttl = _duration(request, "ttl")
        wanted = checks.shorten(
            request.url, request.custom_alias, ttl, self._limits, request.idempotency_key
        )
        keyed = _keyed(request, wanted.idempotency_key)
        with self._serving(context):
            try:
                created = await self._links.shorten(wanted.url, wanted.alias, wanted.ttl, keyed)
            except CodeTaken:
                raise AliasTaken("custom_alias", request.custom_alias) from None
        return pb.ShortenResponse(
            link=_link(created.link), management_token=created.management_token
        )

    async def Resolve(self, request: pb.ResolveRequest, context: Context) -> pb.ResolveResponse:
        code, request_id = checks.resolve(request.code, request.request_id)
        with self._serving(context):
            url = await self._links.resolve(code, request_id)
        return pb.ResolveResponse(url=url)

    async def GetLink(self, request: pb.GetLinkRequest, context: Context) -> pb.GetLinkResponse:
        code = checks.code(request.code)
        with self._serving(context):
            link = await self._links.get(code)
        return pb.GetLinkResponse(link=_link(link))

    async def DeleteLink(
        self, request: pb.DeleteLinkRequest, context: Context
    ) -> pb.DeleteLinkResponse:
        code, token = checks.delete(request.code, request.management_token)
        with self._serving(context):
            await self._links.delete(code, token)
        return pb.DeleteLinkResponse()

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        code, days = checks.stats(request.code, request.days)
        with self._serving(context):
            stats = await self._links.stats(code, days)
        return pb.GetStatsResponse(
            code=code,
            total_clicks=stats.total,
            daily=[pb.DailyClicks(day=d.day.isoformat(), clicks=d.clicks) for d in stats.daily],
        )

    async def CreatePaste(
        self, request: pb.CreatePasteRequest, context: Context
    ) -> pb.CreatePasteResponse:
        ttl = _duration(request, "ttl")
        wanted = checks.paste(
            request.content, request.language, ttl, self._limits, request.idempotency_key
        )
        keyed = _keyed(request, wanted.idempotency_key)
        with self._serving(context):
            paste = await self._pastes.create(wanted.content, wanted.language, wanted.ttl, keyed)
        return pb.CreatePasteResponse(paste=_paste(paste, ""))

    async def GetPaste(self, request: pb.GetPasteRequest, context: Context) -> pb.GetPasteResponse:
        code = checks.code(request.code)
        with self._serving(context):
            paste, content = await self._pastes.get(code)
        return pb.GetPasteResponse(paste=_paste(paste, content))

    @contextlib.contextmanager
    def _serving(self, context: Context) -> Iterator[None]:
        """Reads and writes count as the caller's (read-your-writes); outages are UNAVAILABLE."""
        with caller_scope(self._caller(context)), translated(SERVICE):
            yield

    def _caller(self, context: Context) -> str | None:
        for key, value in context.invocation_metadata() or ():
            if key == self._caller_header and isinstance(value, str) and value:
                return value[:256]
        return None


def _keyed(request: Any, key: str | None) -> Keyed | None:
    return None if key is None else Keyed(key, body_digest(request))


def _duration(request: Any, field: str) -> checks.Lifetime:
    return getattr(request, field) if request.HasField(field) else None


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _link(link: Link) -> pb.Link:
    return pb.Link(
        code=link.code,
        url=link.url,
        created_at=_timestamp(link.created_at),
        expires_at=_timestamp(link.expires_at),
    )


def _paste(paste: Paste, content: str) -> pb.Paste:
    return pb.Paste(
        code=paste.code,
        language=paste.language,
        size_bytes=paste.size_bytes,
        created_at=_timestamp(paste.created_at),
        expires_at=_timestamp(paste.expires_at),
        content=content,
    )


async def _add(server: grpc.aio.Server, context: ServingContext) -> Cleanup:
    from blueprint.local import state

    settings = context.settings
    redis_url = state.redis_url(settings)
    if redis_url is None:
        raise RuntimeError("shortener needs Redis: set BLUEPRINT_REDIS_URL or run `blueprint up`")
    shortener = await open_shortener(
        settings,
        redis_url=redis_url,
        instance_id=context.instance_id,
        tracer_provider=context.tracer_provider,
        registry=context.metrics.registry,
    )
    # Hard dependencies: every shard's writer (no link can be read or written without
    # its shard). Replicas are not (reads fall back to the writer), nor is Redis (the
    # cache is skipped and clicks are dropped while it is away; calls still answer).
    for shard in shortener.store.database.shards:
        context.dependencies.add(shard.writer_guard.dependency, shard.ping_writer)
    servicer = ShortenerServicer(shortener, caller_header=settings.hash_key_header)
    shortener_pb2_grpc.add_ShortenerServicer_to_server(servicer, server)
    return shortener.aclose  # the runtime awaits it once the last call has drained


SPEC = ServiceSpec(
    name=SERVICE,
    grpc_services=[pb.DESCRIPTOR.services_by_name["Shortener"].full_name],
    add_to_server=_add,
)
