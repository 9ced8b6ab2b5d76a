"""Spans for what a handler does besides RPCs: SQL statements and Redis commands.

Both come from OpenTelemetry's own instrumentations. SQL is instrumented per
process (engines created afterwards are traced); Redis per client, so that the
discovery registry's heartbeats and resyncs do not flood traces with root spans.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider

Provider = TracerProvider | NoOpTracerProvider


def instrument_sql(provider: Provider) -> None:
    """Trace every SQLAlchemy engine created from now on (idempotent per process)."""
    instrumentor = SQLAlchemyInstrumentor()
    if isinstance(provider, TracerProvider) and not instrumentor.is_instrumented_by_opentelemetry:
        # Its declared range stops below SQLAlchemy 2.1; the hooks it uses are unchanged,
        # and tests/integration/test_instrumentation.py proves the spans arrive.
        instrumentor.instrument(
            tracer_provider=provider, enable_commenter=False, skip_dep_check=True
        )


def instrument_redis_client(client: Any, provider: Provider) -> None:
    """Trace the commands of this one Redis client."""
    if isinstance(provider, TracerProvider):
        RedisInstrumentor.instrument_client(client, tracer_provider=provider)
