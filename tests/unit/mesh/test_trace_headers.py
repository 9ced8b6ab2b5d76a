"""The trace headers the mesh writes by hand are the W3C propagator's, byte for byte,
and an unsampled root is what the SDK's sampler would have made of a new trace."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from blueprint.mesh.telemetry import tracing

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSAMPLED_RANDOM = TraceFlags(TraceFlags.RANDOM_TRACE_ID)


def _propagator_headers(span: trace.Span) -> list[tuple[str, str]]:
    carrier: dict[str, str] = {}
    tracing.PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return sorted(carrier.items())


@pytest.mark.parametrize(
    "context",
    [
        SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, SAMPLED),
        SpanContext(1, 1, False, UNSAMPLED_RANDOM),  # leading zeros kept
        SpanContext(
            (1 << 128) - 1,
            (1 << 64) - 1,
            True,
            SAMPLED,
            TraceState([("vendor", "value"), ("other", "x=1")]),
        ),
    ],
    ids=["sampled", "small ids", "with tracestate"],
)
def test_injected_headers_are_the_w3c_propagators(context: SpanContext) -> None:
    span = NonRecordingSpan(context)
    written = tracing.inject([("x-caller", "kept"), ("traceparent", "00-old-old-00")], span)
    assert written[0] == ("x-caller", "kept")
    assert sorted(written[1:]) == _propagator_headers(span)


def test_an_invalid_span_writes_no_trace_headers() -> None:
    written = tracing.inject([("traceparent", "stale"), ("a", "b")], trace.INVALID_SPAN)
    assert written == [("a", "b")]


def test_unsampled_roots_have_fresh_valid_ids_and_are_marked_random() -> None:
    roots = [tracing.unsampled_root().get_span_context() for _ in range(200)]
    assert all(c.is_valid and not c.is_remote for c in roots)
    assert all(not c.trace_flags.sampled for c in roots)
    assert all(c.trace_flags & TraceFlags.RANDOM_TRACE_ID for c in roots)
    assert len({c.trace_id for c in roots}) == 200
    assert len({c.span_id for c in roots}) == 200
    # Both halves of the draw are used: trace ids reach past 64 bits.
    assert any(c.trace_id >= 1 << 64 for c in roots)
