"""`helm test`: every enabled service answers through the mesh.

Run by the chart's test pod as `python -c <this file> SERVICE...` with the
release's discovery settings. For each service it waits until discovery (the
Service's EndpointSlices) lists endpoints, asks each one grpc.health.v1 and
expects SERVING; then, when diag is among them, it calls diag Echo through the
mesh client, as any caller would. Exit 0 when all of that holds, else 1 with
one line per problem.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from blueprint.local.status import health_of
from blueprint.mesh.discovery import Registry, open_registry
from blueprint.mesh.settings import Settings

WAIT_SECONDS = float(os.environ.get("BLUEPRINT_TEST_WAIT_SECONDS", "60"))


async def check_service(registry: Registry, service: str) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (instances := await registry.instances(service)):
        if time.monotonic() > deadline:
            return [f"{service}: no endpoints in discovery after {WAIT_SECONDS:.0f}s"]
        await asyncio.sleep(1)
    problems = []
    for instance in instances:
        health = await health_of(instance.address, timeout=3.0)
        print(f"{service:<10} {instance.instance_id:<40} {instance.address:<21} {health}")
        if health != "SERVING":
            problems.append(f"{service}: {instance.instance_id} at {instance.address} is {health}")
    return problems


async def echo_diag() -> list[str]:
    process = await asyncio.create_subprocess_exec(
        "blueprint", "call", "diag", "Echo", '{"payload": "helm-test"}',
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    text = output.decode().strip()
    print(f"diag Echo -> {text}")
    if process.returncode != 0 or "helm-test" not in text:
        return [f"diag Echo through the mesh failed: {text}"]
    return []


async def main(services: list[str]) -> int:
    registry = open_registry(Settings())
    try:
        results = await asyncio.gather(*(check_service(registry, s) for s in services))
    finally:
        await registry.close()
    problems = [p for result in results for p in result]
    if "diag" in services:
        problems += await echo_diag()
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print("mesh check:", "FAILED" if problems else f"{len(services)} service(s) SERVING")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
