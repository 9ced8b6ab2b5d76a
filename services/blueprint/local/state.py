"""The note `blueprint up` leaves so commands in other shells find its Redis."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from blueprint.mesh.settings import Settings

STATE_FILE = "up.json"


@dataclass(frozen=True)
class UpState:
    pid: int
    redis_url: str


def write(state_dir: Path, state: UpState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state)))


def remove(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def read(state_dir: Path) -> UpState | None:
    """The running `up`'s state, or None when there is none (or it died)."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        state = UpState(pid=int(data["pid"]), redis_url=str(data["redis_url"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    return state


def redis_url(settings: Settings) -> str | None:
    """BLUEPRINT_REDIS_URL if set, else the Redis of a running `blueprint up`."""
    if settings.redis_url:
        return settings.redis_url
    state = read(settings.state_dir)
    return state.redis_url if state else None
