"""Calls a `blueprint serve diag` started from the image, from outside it.

Run by scripts/image_check.sh with the host's venv: waits for grpc.health.v1 to
say SERVING, checks that Echo returns the payload and an instance id, and that
the metrics port serves Prometheus text. Exits non-zero with one line per failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blueprint.diag.v1 import diag_pb2, diag_pb2_grpc


class SmokeFailure(Exception):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_serving(channel: grpc.Channel, server_pid: int, timeout: float) -> float:
    """Seconds until the server's overall health said SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    while True:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return time.monotonic() - started
        except grpc.RpcError:
            pass  # not listening yet
        if not _alive(server_pid):
            raise SmokeFailure(f"the server (pid {server_pid}) exited before it was SERVING")
        if time.monotonic() - started > timeout:
            raise SmokeFailure(f"health did not say SERVING within {timeout:.0f}s")
        time.sleep(0.1)


def check_echo(channel: grpc.Channel) -> str:
    payload = f"image-check-{uuid.uuid4().hex[:8]}"
    reply = diag_pb2_grpc.DiagnosticsStub(channel).Echo(
        diag_pb2.EchoRequest(payload=payload), timeout=5.0
    )
    if reply.payload != payload:
        raise SmokeFailure(f"Echo returned {reply.payload!r}, sent {payload!r}")
    if not reply.instance_id:
        raise SmokeFailure("Echo returned no instance_id")
    return reply.instance_id


def check_metrics(host: str, port: int) -> int:
    """Number of samples exposed; the default collectors always give python_info."""
    # No proxy for a local port, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{host}:{port}/metrics", timeout=5.0) as response:
        if response.status != 200:
            raise SmokeFailure(f"/metrics answered HTTP {response.status}")
        text = response.read().decode()
    if "python_info" not in text:
        raise SmokeFailure("/metrics does not look like Prometheus text (no python_info)")
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True, help="stop waiting if it dies")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for SERVING")
    args = parser.parse_args(argv)

    try:
        with grpc.insecure_channel(f"{args.host}:{args.port}") as channel:
            waited = wait_serving(channel, args.server_pid, args.timeout)
            print(f"smoke: health SERVING after {waited:.1f}s")
            instance_id = check_echo(channel)
            print(f"smoke: Echo answered, instance_id={instance_id}")
        samples = check_metrics(args.host, args.metrics_port)
        print(f"smoke: /metrics served {samples} samples")
    except (SmokeFailure, grpc.RpcError, OSError) as error:
        print(f"smoke: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
