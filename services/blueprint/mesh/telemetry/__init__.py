"""Traces and metrics for every hop: OpenTelemetry spans, prometheus-client metrics."""
