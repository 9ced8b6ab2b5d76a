"""SQL statements and Redis commands made while serving a call appear in its trace."""

from __future__ import annotations

import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.instrumentation import instrument_redis_client, instrument_sql


async def test_sql_and_redis_spans_are_children_of_the_handlers_span(
    redis_url: str, redis_prefix: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_sql(provider)
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    client = aioredis.Redis.from_url(redis_url)
    instrument_redis_client(client, provider)
    try:
        with tracing.tracer(provider).start_as_current_span("handler", kind=SpanKind.SERVER):
            async with engine.connect() as connection:
                assert (await connection.execute(text("select 41 + 1"))).scalar() == 42
            await client.set(f"{redis_prefix}:k", "v")
    finally:
        await client.aclose()
        await engine.dispose()

    spans = exporter.get_finished_spans()
    (handler,) = [s for s in spans if s.name == "handler"]
    children = [s for s in spans if s.parent and s.parent.span_id == handler.context.span_id]
    systems = {str((s.attributes or {}).get("db.system", "")) for s in children}
    names = " ".join(s.name for s in children)
    assert "sqlite" in systems or "SELECT" in names.upper(), [s.name for s in children]
    assert any("SET" in s.name.upper() for s in children), [s.name for s in children]
