"""SQL statements and Redis commands made while serving a call appear in its trace.

SQL instrumentation is process-wide (it wraps engine creation), so the check
runs in a fresh interpreter: in this one, an earlier test's server runtime may
already have instrumented SQLAlchemy with its own tracer provider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCENARIO = """
import asyncio, json, sys
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from blueprint.infra.sql.engines import EngineOptions, create_engine
from blueprint.mesh.telemetry import tracing
from blueprint.mesh.telemetry.instrumentation import instrument_redis_client, instrument_sql

async def main(redis_url, key):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_sql(provider)
    engine = create_engine("sqlite+aiosqlite:///:memory:", EngineOptions())
    client = aioredis.Redis.from_url(redis_url)
    instrument_redis_client(client, provider)
    with tracing.tracer(provider).start_as_current_span("handler", kind=SpanKind.SERVER):
        async with engine.connect() as connection:
            assert (await connection.execute(text("select 41 + 1"))).scalar() == 42
        await client.set(key, "v")
        await client.delete(key)
    await client.aclose()
    await engine.dispose()
    spans = exporter.get_finished_spans()
    handler = next(s for s in spans if s.name == "handler")
    print(json.dumps([
        {"name": s.name, "db": str((s.attributes or {}).get("db.system", "")),
         "child": bool(s.parent and s.parent.span_id == handler.context.span_id)}
        for s in spans if s.name != "handler"
    ]))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_sql_and_redis_spans_are_children_of_the_handlers_span(
    redis_url: str, redis_prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEPRINT_")}
    result = subprocess.run(
        [sys.executable, "-c", SCENARIO, redis_url, f"{redis_prefix}:k"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.strip().splitlines()[-1])
    assert spans and all(s["child"] for s in spans), spans
    assert any(s["db"] == "sqlite" for s in spans), spans
    assert any(s["name"].upper().startswith("SET") for s in spans), spans
