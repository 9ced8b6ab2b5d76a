"""The ready file: how a process started by another tells it where it listens.

Each process binds its own ports (port 0: the kernel picks a free one), so no other
process can take a port between a pick and a bind, and then reports what it bound
in one small JSON file, written atomically (a temporary file renamed into place), so a
reader sees either nothing or the whole report. `blueprint up`, the tests and the
benchmarks read it (`blueprint.local.processes`); it is written once the process
serves, so its presence also means "started".
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Bound:
    pid: int
    port: int  # gRPC (a worker: its health port)
    metrics_port: int


def report(path: Path | None, bound: Bound) -> None:
    """Write `bound` to `path` (BLUEPRINT_READY_FILE); nothing when unset."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{bound.pid}.tmp")
    partial.write_text(json.dumps(asdict(bound)))
    os.replace(partial, path)


def read(path: Path) -> Bound | None:
    """The report at `path`, or None when there is none (yet)."""
    try:
        data = json.loads(path.read_text())
        return Bound(
            pid=int(data["pid"]), port=int(data["port"]), metrics_port=int(data["metrics_port"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
