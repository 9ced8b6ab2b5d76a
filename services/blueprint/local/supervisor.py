"""Keeping `blueprint up`'s processes running, as a Deployment would.

Each replica binds its own ports and reports them in its ready file; until then it is
starting. A replica that exits (at start or later) or is not ready within the start
timeout is restarted after a backoff that doubles per failure in a row; being ready
resets the count. After `RestartPolicy.attempts` failures in a row the supervisor gives
up on it: one line names the replica, the last line of its log and where the log is,
and `blueprint up` stops everything and exits non-zero, because a failure that stays is
a mistake to fix (a bad setting, a missing dependency), not one to retry forever.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from blueprint.local.processes import last_line, ready, ready_env, spawn
from blueprint.mesh.ready import Bound


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a replica that failed, and when to stop trying."""

    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    attempts: int = 5  # failed starts in a row

    def __post_init__(self) -> None:
        if not 0 < self.backoff_seconds <= self.max_backoff_seconds:
            raise ValueError("need 0 < backoff_seconds <= max_backoff_seconds")
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")

    def delay(self, failures: int) -> float:
        """The wait before the start that follows `failures` failures in a row."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (failures - 1))

    def gives_up(self, failures: int) -> bool:
        return failures >= self.attempts


@dataclass
class Replica:
    service: str
    number: int
    log_path: Path
    ready_file: Path
    command: str = "serve"  # or "work", for a queue worker
    process: subprocess.Popen[bytes] | None = None
    bound: Bound | None = None  # what it reported once ready; None while starting
    health: str = "STARTING"
    started_at: float = 0.0
    restart_at: float | None = None
    failures: int = 0  # in a row, since it was last ready
    restarts: int = 0
    gave_up: str | None = None  # the last failure, once the supervisor stopped trying

    @property
    def instance_id(self) -> str:
        return f"{self.service}-{self.number}"

    @property
    def name(self) -> str:
        return self.service if self.command == "serve" else f"{self.service} (worker)"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.bound.port}" if self.bound else "-"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.bound.metrics_port}/metrics" if self.bound else "-"


class Supervisor:
    """Starts replicas and, one `step` at a time, notices them ready, failed or due."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        env: Mapping[str, str],
        policy: RestartPolicy,
        *,
        start_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.replicas = list(replicas)
        self._env = dict(env)
        self._policy = policy
        self._start_timeout = start_timeout
        self._clock = clock
        self._say = say

    def start_all(self) -> None:
        for replica in self.replicas:
            self._start(replica)

    @property
    def all_ready(self) -> bool:
        return all(r.bound is not None for r in self.replicas)

    @property
    def given_up(self) -> list[Replica]:
        return [r for r in self.replicas if r.gave_up is not None]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        return [r.process for r in self.replicas if r.process is not None]

    def step(self) -> None:
        now = self._clock()
        for replica in self.replicas:
            if replica.gave_up is None:
                self._step(replica, now)

    def _step(self, replica: Replica, now: float) -> None:
        process = replica.process
        if process is None:
            if replica.restart_at is not None and now >= replica.restart_at:
                replica.restarts += 1
                self._start(replica)
            return
        if process.poll() is not None:
            self._failed(replica, f"exited with code {process.returncode}", now)
        elif replica.bound is None:
            bound = ready(process, replica.ready_file)
            if bound is not None:
                replica.bound, replica.failures, replica.health = bound, 0, "SERVING"
                if replica.restarts:
                    self._say(f"{replica.instance_id} is back, on {replica.address}")
            elif now - replica.started_at > self._start_timeout:
                process.kill()
                process.wait()
                self._failed(replica, f"not ready within {self._start_timeout:g} s", now)

    def _start(self, replica: Replica) -> None:
        replica.ready_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "blueprint.cli", replica.command, replica.service]
        env = {
            **self._env,
            **ready_env(replica.ready_file),
            "BLUEPRINT_INSTANCE_ID": replica.instance_id,
        }
        replica.process = spawn(argv, env, replica.log_path)
        replica.bound, replica.health, replica.restart_at = None, "STARTING", None
        replica.started_at = self._clock()

    def _failed(self, replica: Replica, what: str, now: float) -> None:
        replica.process, replica.bound, replica.health = None, None, "DOWN"
        replica.failures += 1
        reason = f"{what}: {last_line(replica.log_path)}"
        where = f"(log: {replica.log_path})"
        if self._policy.gives_up(replica.failures):
            replica.gave_up = reason
            self._say(
                f"blueprint up: giving up on {replica.instance_id}, failed {replica.failures} "
                f"times in a row; last: {reason} {where}"
            )
            return
        delay = self._policy.delay(replica.failures)
        replica.restart_at = now + delay
        self._say(f"{replica.instance_id} {reason}; restarting in {delay:g} s {where}")
