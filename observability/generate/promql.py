"""Metric names from the mesh's contract and the PromQL pieces built on them.

Names follow OpenTelemetry's RPC semantic conventions as Prometheus spells them
(`rpc.method` becomes `rpc_method`). The gRPC service is the part of `rpc_method`
before the slash; rules and dashboards derive it with `label_replace`, so they
need no join and work the same locally and in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.utils import floatToGoString

SERVER_DURATION = "rpc_server_call_duration_seconds"
CLIENT_DURATION = "rpc_client_call_duration_seconds"
SERVER_IN_FLIGHT = "rpc_server_calls_in_flight"
CLIENT_IN_FLIGHT = "rpc_client_calls_in_flight"
BUILD_INFO = "blueprint_build_info"

SERVICE_LABEL = "rpc_service"
SERVICE_OF_METHOD = "([^/]+)/.*"
# Grafana's variable regex for the same thing (a JavaScript regex literal).
SERVICE_OF_METHOD_JS = "/^([^/]+)\\//"


def with_service(expr: str) -> str:
    """`expr` with an `rpc_service` label cut from `rpc_method`."""
    return f'label_replace({expr}, "{SERVICE_LABEL}", "$1", "rpc_method", "{SERVICE_OF_METHOD}")'


def selector(metric: str, *matchers: str) -> str:
    present = [m for m in matchers if m]
    return f"{metric}{{{', '.join(present)}}}" if present else metric


def one_of(label: str, values: Iterable[str], *, negate: bool = False) -> str:
    """A regex matcher for exact values; empty when there are none to match."""
    escaped = [v.replace("\\", "\\\\").replace(".", "\\\\.") for v in sorted(values)]
    if not escaped:
        return ""
    return f'{label}{"!~" if negate else "=~"}"{"|".join(escaped)}"'


def le(bound: float) -> str:
    """A bucket boundary exactly as prometheus-client writes it ("1.0", "0.25")."""
    return floatToGoString(bound)


def sum_by(labels: Iterable[str], expr: str) -> str:
    return f"sum by ({', '.join(labels)}) ({expr})"


def ratio_or_zero(part: str, whole: str, labels: Iterable[str]) -> str:
    """part/whole per label set, 0 (not absent) where `part` has no series yet."""
    by = ", ".join(labels)
    return (
        f"(\n  sum by ({by}) ({part})\n  or\n  0 * sum by ({by}) ({whole})\n)\n"
        f"/\nsum by ({by}) ({whole})"
    )
