"""Which RPC methods stream, read from the generated Protobuf descriptors.

A streaming call's duration is the life of the stream (a price subscription can
last hours), not how long the caller waited for an answer, so the latency
objective covers unary methods only. Reading the list off the descriptors keeps
it right as services are added: the freshness check fails until the rules are
regenerated.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import blueprint

# Every server also answers health checks and reflection (the runtime adds them):
# Health/Watch and ServerReflectionInfo are streams that stay open for minutes.
RUNTIME_STUBS = ("grpc_health.v1.health_pb2", "grpc_reflection.v1alpha.reflection_pb2")


def _stub_modules() -> list[str]:
    root = Path(blueprint.__file__).parent
    ours = sorted(
        f"blueprint.{path.parent.parent.name}.v1.{path.stem}" for path in root.glob("*/v1/*_pb2.py")
    )
    return [*ours, *RUNTIME_STUBS]


def streaming_methods() -> list[str]:
    """Fully qualified `package.Service/Method` names of every streaming RPC."""
    methods = []
    for name in _stub_modules():
        descriptor = importlib.import_module(name).DESCRIPTOR
        for service in descriptor.services_by_name.values():
            for method in service.methods:
                if method.client_streaming or method.server_streaming:
                    methods.append(f"{service.full_name}/{method.name}")
    return sorted(methods)
