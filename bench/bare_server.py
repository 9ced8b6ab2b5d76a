"""The baseline a user would write by hand: diag's servicer on a bare `grpc.aio` server.

No interceptors, no telemetry, no health or reflection, the default asyncio event
loop: `python -m bench.bare_server`. It binds BLUEPRINT_PORT (0: any) and reports
what it bound in BLUEPRINT_READY_FILE, as `blueprint serve` does, so the benchmark
starts and waits for both the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc.aio

from blueprint.diag.service import DiagnosticsServicer
from blueprint.diag.v1 import diag_pb2_grpc
from blueprint.mesh import ready
from blueprint.mesh.client import MeshClient
from blueprint.mesh.discovery import StaticRegistry
from blueprint.mesh.settings import Settings


async def main() -> None:
    instance_id = os.environ.get("BLUEPRINT_INSTANCE_ID", "diag-bare")
    # Echo never calls out; the servicer only needs a mesh to be built.
    mesh = MeshClient(Settings(discovery="static"), StaticRegistry({}))
    server = grpc.aio.server()
    servicer = DiagnosticsServicer(instance_id, service="diag", mesh=mesh)
    diag_pb2_grpc.add_DiagnosticsServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{os.environ.get('BLUEPRINT_PORT', '0')}")
    await server.start()
    ready_file = os.environ.get("BLUEPRINT_READY_FILE")
    ready.report(Path(ready_file) if ready_file else None, ready.Bound(os.getpid(), port, 0))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)
    await mesh.close()


if __name__ == "__main__":
    asyncio.run(main())
