"""Tracer setup and W3C trace-context propagation through gRPC metadata.

Propagation needs only the OpenTelemetry API; the SDK is imported when a process
builds its tracer provider, so a client that traces nothing (the CLI) never loads it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID, NoOpTracerProvider, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "blueprint.mesh"
# W3C trace context only: the one format every OpenTelemetry SDK reads.
PROPAGATOR = TraceContextTextMapPropagator()

MetadataPairs = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[MetadataPairs]):
    """Reads headers from gRPC metadata pairs; binary (-bin) values are never trace context."""

    def get(self, carrier: MetadataPairs, key: str) -> list[str] | None:
        found = [v for k, v in carrier if k == key and isinstance(v, str)]
        return found or None

    def keys(self, carrier: MetadataPairs) -> list[str]:
        return [k for k, _ in carrier]


class _MetadataSetter(Setter[list[tuple[str, str | bytes]]]):
    def set(self, carrier: list[tuple[str, str | bytes]], key: str, value: str) -> None:
        carrier.append((key, value))


_GETTER = _MetadataGetter()
_SETTER = _MetadataSetter()


def extract(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The caller's trace context; malformed or hostile headers yield an empty context,
    as the W3C propagator ignores what it cannot parse."""
    try:
        return PROPAGATOR.extract(list(metadata or ()), getter=_GETTER)
    except Exception:  # a bad header must never fail the call
        log.debug("ignored unreadable trace context", exc_info=True)
        return otel_context.Context()


def carries_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether `metadata` has a traceparent at all: most calls from outside the mesh do
    not, and then there is nothing to parse."""
    # A plain loop: asked on every call, and a generator costs more than the search.
    for key, _ in metadata or ():  # noqa: SIM110
        if key == "traceparent":
            return True
    return False


def parent_of(context: otel_context.Context | None) -> trace.SpanContext:
    """The span context a new span would have as parent in `context` (None: the current)."""
    return trace.get_current_span(context).get_span_context()


def unsampled_span(parent: trace.SpanContext, roots_sampled: bool) -> trace.NonRecordingSpan | None:
    """The span the sampler built by `tracer_provider` (parent-based) would give a new
    span under `parent` (invalid: a root), when that answer is known without asking it:
    not sampled under an unsampled parent, or as a root when roots are never sampled
    (a ratio of 0). None when the sampler must decide. Same ids and flags as the SDK
    would make, without a sampling result, attributes, or a recording span."""
    if parent.is_valid:
        if parent.trace_flags.sampled:
            return None
        return trace.NonRecordingSpan(
            trace.SpanContext(
                parent.trace_id,
                _new_span_id(),
                is_remote=False,
                trace_flags=trace.TraceFlags(parent.trace_flags & _RANDOM_TRACE_ID),
                trace_state=parent.trace_state,
            )
        )
    if roots_sampled:
        return None
    return unsampled_root()


def unsampled_root() -> trace.NonRecordingSpan:
    """A new trace's first span, not sampled: what `unsampled_span` gives a root when
    roots are never sampled. Both ids come from one draw of random bits."""
    bits = random.getrandbits(192)
    trace_id, span_id = bits >> 64, bits & _SPAN_ID_MASK
    if trace_id == INVALID_TRACE_ID or span_id == INVALID_SPAN_ID:  # once in 2^64 draws
        trace_id, span_id = _new_trace_id(), _new_span_id()
    return trace.NonRecordingSpan(
        trace.SpanContext(trace_id, span_id, False, _UNSAMPLED_RANDOM_ROOT, _DEFAULT_TRACE_STATE)
    )


# The SDK's ids are random, and it says so in the flags (W3C trace context level 2).
_RANDOM_TRACE_ID = trace.TraceFlags.RANDOM_TRACE_ID
_UNSAMPLED_RANDOM_ROOT = trace.TraceFlags(trace.TraceFlags.DEFAULT | _RANDOM_TRACE_ID)
_DEFAULT_TRACE_STATE = trace.DEFAULT_TRACE_STATE
_SPAN_ID_MASK = (1 << 64) - 1


def _new_span_id() -> int:
    # As the SDK's RandomIdGenerator: random bits, never the invalid id.
    while (span_id := random.getrandbits(64)) == INVALID_SPAN_ID:
        pass
    return span_id


def _new_trace_id() -> int:
    while (trace_id := random.getrandbits(128)) == INVALID_TRACE_ID:
        pass
    return trace_id


def inject(
    metadata: Iterable[tuple[str, str | bytes]] | None, span: trace.Span | None = None
) -> list[tuple[str, str | bytes]]:
    """A copy of `metadata` with the trace context of `span` (default: the current one)
    added, any old one replaced."""
    carrier = [(k, v) for k, v in metadata or () if k not in ("traceparent", "tracestate")]
    if span is None:
        PROPAGATOR.inject(carrier, setter=_SETTER)
        return carrier
    # A given span's headers written here, as the W3C propagator writes them (tests hold
    # the two equal): every outgoing call does this, and the propagator's way round
    # (a context made, then read back) costs several times more.
    context = span.get_span_context()
    if context.is_valid:
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        carrier.append(("traceparent", traceparent))
        if context.trace_state:
            carrier.append(("tracestate", context.trace_state.to_header()))
    return carrier


def tracer_provider(
    settings: Settings, service: str, instance_id: str, *, processors: Sequence[SpanProcessor] = ()
) -> TracerProvider | NoOpTracerProvider:
    """A provider for this process: sampled by ratio (respecting the caller's decision),
    exporting over OTLP/gRPC when BLUEPRINT_OTLP_ENDPOINT is set."""
    if not settings.telemetry_enabled:
        return NoOpTracerProvider()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    resource = Resource.create({"service.name": service, "service.instance.id": instance_id})
    provider = TracerProvider(
        resource=resource, sampler=ParentBasedTraceIdRatio(settings.trace_sampling_ratio)
    )
    for processor in processors:
        provider.add_span_processor(processor)
    if settings.otlp_endpoint:
        # Imported here: the exporter pulls in its own gRPC stubs, needless when off.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


def tracer(provider: TracerProvider | NoOpTracerProvider) -> Tracer:
    return provider.get_tracer(INSTRUMENTATION_NAME)
