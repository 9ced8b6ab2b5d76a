"""Carrying a rollout out: helm and kubectl as subprocesses, nothing decided here.

Every change is `helm upgrade RELEASE CHART --reset-then-reuse-values` with
only the step's values on top: the release keeps whatever its operator set,
and a newer chart's new defaults (a service added, say) still arrive, which
plain `--reuse-values` would drop.
Reading the release is `helm get values --all` (chart defaults included),
`helm history` (the rollout's record) and `kubectl get deployment`.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blueprint.deploy import verify
from blueprint.deploy.plan import ServiceCheck, Step, Verification, readiness
from blueprint.deploy.state import (
    COLORS,
    Color,
    ReleaseState,
    deployment_name,
    preview_service,
)

HISTORY_DEPTH = 50  # revisions searched for the latest rollout record
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


def helm_overrides(values: Mapping[str, str | int]) -> list[str]:
    """`--set`/`--set-string` flags for `values`."""
    flags: list[str] = []
    for key, value in values.items():
        # Strings stay strings: a tag like 20240101 must not become a number.
        flags += ["--set" if isinstance(value, int) else "--set-string", f"{key}={value}"]
    return flags


@dataclass(frozen=True)
class Tools:
    """Which binaries, release and chart; `wait_seconds` bounds each rollout wait."""

    helm: str = "helm"
    kubectl: str = "kubectl"
    release: str = "blueprint"
    chart: str = "helm/blueprint"
    namespace: str | None = None
    wait_seconds: int = 300
    forward_seconds: float = 30.0  # for `kubectl port-forward` to start listening


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(f"{' '.join(argv)}: {detail}")
        self.argv = list(argv)


class Runner:
    def __init__(
        self,
        tools: Tools,
        *,
        say: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
        probe: Callable[[str, str], list[str]] = verify.probe,
    ) -> None:
        self.tools = tools
        self.say = say  # progress for the operator, one line each
        self.sleep = sleep
        self._probe = probe

    # -- reading --------------------------------------------------------------------------

    def read_state(self) -> ReleaseState:
        release = self.tools.release
        values = self._json(self._helm("get", "values", release, "--all", "-o", "json"))
        history = self._json(
            self._helm("history", release, "--max", str(HISTORY_DEPTH), "-o", "json")
        )
        services = ReleaseState.read(values).services
        names = [deployment_name(service, color) for service in services for color in COLORS]
        found = None
        if names:
            found = self._json(
                self._kubectl("get", "deployment", *names, "--ignore-not-found", "-o", "json")
            )
        items = found.get("items", []) if isinstance(found, dict) else []
        return ReleaseState.read(values, items, history if isinstance(history, list) else [])

    # -- changing -------------------------------------------------------------------------

    def apply(self, state: ReleaseState, steps: Sequence[Step]) -> None:
        for step in steps:
            self.say(f"-> {step.why}")
            self._helm(
                "upgrade",
                self.tools.release,
                self.tools.chart,
                "--reset-then-reuse-values",
                *helm_overrides(step.values),
                "--description",
                step.record.describe(),
            )
            if step.wait_for is not None:
                self.wait_rolled_out(state.services, step.wait_for)
            if step.settle_seconds > 0:
                self.say(f"   waiting {step.settle_seconds:g}s for clients to follow")
                self.sleep(step.settle_seconds)

    def wait_rolled_out(self, services: Sequence[str], color: Color) -> None:
        for service in services:
            self._kubectl(
                "rollout",
                "status",
                f"deployment/{deployment_name(service, color)}",
                f"--timeout={self.tools.wait_seconds}s",
            )

    # -- verifying ------------------------------------------------------------------------

    def verify(self, state: ReleaseState) -> Verification:
        """Readiness from the Deployments, then health and a smoke call through each preview."""
        color = state.idle
        checks = []
        for service, problems in readiness(state, color).items():
            deployment = state.deployment(service, color)
            if deployment is None or deployment.ready == 0:
                problems.append("not probed: no ready pod")
            else:
                try:
                    with self.port_forward(preview_service(service)) as address:
                        problems += self._probe(address, service)
                except CommandFailed as error:
                    problems.append(f"port-forward failed: {error}")
            checks.append(ServiceCheck(service, tuple(problems)))
        return Verification(color, state.tags[color], tuple(checks))

    @contextlib.contextmanager
    def port_forward(self, service: str) -> Iterator[str]:
        """A local address forwarded to a pod behind Service `service`'s gRPC port."""
        argv = self._argv(
            self.tools.kubectl, "port-forward", f"service/{service}", ":grpc",
            "--address", "127.0.0.1",
        )  # fmt: skip
        process = self._spawn(argv)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
        try:
            yield f"127.0.0.1:{self._forwarded_port(argv, process, lines)}"
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _forwarded_port(
        self, argv: list[str], process: subprocess.Popen[str], lines: queue.Queue[str | None]
    ) -> int:
        deadline = time.monotonic() + self.tools.forward_seconds
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise CommandFailed(argv, "no forwarding port reported in time") from None
            if line is None:
                process.wait()
                stderr = process.stderr.read() if process.stderr else ""
                raise CommandFailed(argv, f"exited {process.returncode}: {stderr.strip()}")
            match = FORWARDING.search(line)
            if match:
                return int(match.group(1))

    # -- commands -------------------------------------------------------------------------

    def _argv(self, binary: str, *args: str) -> list[str]:
        namespace = ["--namespace", self.tools.namespace] if self.tools.namespace else []
        return [binary, *args, *namespace]

    def _helm(self, *args: str) -> str:
        return self._run(self._argv(self.tools.helm, *args))

    def _kubectl(self, *args: str) -> str:
        return self._run(self._argv(self.tools.kubectl, *args))

    def _run(self, argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except OSError as error:
            raise CommandFailed(argv, str(error)) from error
        if done.returncode != 0:
            raise CommandFailed(argv, f"exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def _spawn(self, argv: list[str]) -> subprocess.Popen[str]:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as error:
            raise CommandFailed(argv, str(error)) from error

    @staticmethod
    def _json(text: str) -> Any:
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError as error:
            raise CommandFailed(["(output)"], f"not JSON: {error}") from error


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Hand port-forward's stdout over line by line; None once it closes."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)
