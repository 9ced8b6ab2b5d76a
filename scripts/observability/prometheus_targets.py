"""Writes the Blueprint processes discovery knows as a Prometheus file_sd target list.

Each instance registers its metrics port (metadata `metrics_port`); Prometheus
has no Redis discovery, so this turns the registry into the file it watches.
Targets carry `service` (the discovery name), as a Kubernetes ServiceMonitor's do.

    python scripts/observability/prometheus_targets.py --out targets.json [--watch 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from blueprint.local import state
from blueprint.mesh.discovery import Registry, open_registry
from blueprint.mesh.settings import Settings


async def targets(registry: Registry) -> list[dict[str, object]]:
    groups: list[dict[str, object]] = []
    for service in sorted(await registry.services()):
        for instance in sorted(await registry.instances(service), key=lambda i: i.instance_id):
            port = instance.metadata.get("metrics_port")
            if not port:
                continue
            host = instance.address.rsplit(":", 1)[0]
            groups.append(
                {
                    "targets": [f"{host}:{port}"],
                    "labels": {"service": service, "instance_id": instance.instance_id},
                }
            )
    return groups


def write_atomically(path: Path, text: str) -> None:
    """Prometheus may read at any moment: never let it see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


async def run(out: Path, watch: float | None) -> None:
    settings = Settings()
    registry = open_registry(settings, redis_url=state.redis_url(settings))
    try:
        while True:
            write_atomically(out, json.dumps(await targets(registry), indent=2) + "\n")
            if watch is None:
                return
            await asyncio.sleep(watch)
    finally:
        await registry.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--watch", type=float, help="rewrite every this many seconds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or the run script's kill
        asyncio.run(run(args.out, args.watch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
