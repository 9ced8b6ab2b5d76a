"""Carrying a rollout out: helm and kubectl as subprocesses, nothing decided here.

Every change is `helm upgrade RELEASE CHART --reset-then-reuse-values` with
only the step's values on top: the release keeps whatever its operator set,
and a newer chart's new defaults (a service added, say) still arrive, which
plain `--reuse-values` would drop. Each upgrade is bounded by `--timeout` and,
but for `deploy`, runs with `--no-hooks`.
Reading the release is `helm history` (which revision is deployed), `helm get
values --all --revision N` of that revision, and `kubectl get deployment`;
reaching pods is `kubectl get endpointslices|pods` and `kubectl port-forward`.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from blueprint.deploy import verify
from blueprint.deploy.plan import Step, Value
from blueprint.deploy.state import (
    COLORS,
    Color,
    History,
    ReleaseError,
    ReleaseState,
    deployment_name,
)
from blueprint.mesh.discovery.base import Instance
from blueprint.mesh.discovery.kubernetes import SERVICE_NAME_LABEL, instances_from_slices

HISTORY_DEPTH = 50  # revisions searched for the deployed one and the rollout record
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


def helm_overrides(values: Mapping[str, Value]) -> list[str]:
    """`--set`/`--set-string`/`--set-json` flags for `values`."""
    flags: list[str] = []
    for key, value in values.items():
        if value is None:
            flags += ["--set", f"{key}=null"]  # helm drops a key set to null
        elif isinstance(value, Mapping):
            flags += ["--set-json", f"{key}={json.dumps(value, sort_keys=True)}"]
        elif isinstance(value, int):
            flags += ["--set", f"{key}={value}"]
        else:
            # Strings stay strings: a tag like 20240101 must not become a number.
            flags += ["--set-string", f"{key}={value}"]
    return flags


@dataclass(frozen=True)
class Tools:
    """Which binaries, release and chart; `wait_seconds` bounds helm and each rollout wait."""

    helm: str = "helm"
    kubectl: str = "kubectl"
    release: str = "blueprint"
    chart: str = "helm/blueprint"
    namespace: str | None = None
    wait_seconds: int = 600  # the chart's advice for the migration Job: 10 minutes
    forward_seconds: float = 30.0  # for `kubectl port-forward` to start listening


class CommandFailed(RuntimeError):
    def __init__(self, argv: Sequence[str], detail: str) -> None:
        super().__init__(f"{' '.join(argv)}: {detail}")
        self.argv = list(argv)


@dataclass(frozen=True)
class PodStatus:
    name: str
    ready: bool
    restarts: int

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PodStatus:
        status = obj.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
        deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
        running = status.get("phase") == "Running" and conditions.get("Ready") == "True"
        containers = status.get("containerStatuses") or ()
        return cls(
            name=obj["metadata"]["name"],
            ready=running and not deleting,
            restarts=sum(int(c.get("restartCount", 0)) for c in containers),
        )


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
        self.probe = probe

    # -- reading the release --------------------------------------------------------------

    def read_state(self) -> ReleaseState:
        release = self.tools.release
        history = self._json(
            self._helm("history", release, "--max", str(HISTORY_DEPTH), "-o", "json")
        )
        history = history if isinstance(history, list) else []
        deployed = History.read(history).deployed
        if deployed is None:
            raise ReleaseError(f"no deployed revision of {release} in its last {HISTORY_DEPTH}")
        values = self._json(
            self._helm(
                "get", "values", release, "--all", "--revision", str(deployed.number), "-o", "json"
            )
        )
        declared = ReleaseState.read(values)
        workloads = [*declared.services, *declared.worker_workloads]
        names = [deployment_name(workload, color) for workload in workloads for color in COLORS]
        found = None
        if names:
            found = self._json(
                self._kubectl("get", "deployment", *names, "--ignore-not-found", "-o", "json")
            )
        items = found.get("items", []) if isinstance(found, dict) else []
        return ReleaseState.read(
            values, items, history, release=release, namespace=self.tools.namespace
        )

    def chart_version(self) -> str:
        """`name-version` of the chart this runner upgrades with, as helm's history shows it."""
        meta = yaml.safe_load(self._helm("show", "chart", self.tools.chart)) or {}
        return f"{meta.get('name', '')}-{meta.get('version', '')}"

    # -- changing it ----------------------------------------------------------------------

    def apply(self, state: ReleaseState, steps: Sequence[Step]) -> None:
        for step in steps:
            self.say(f"-> {step.why}")
            self._helm(
                "upgrade",
                self.tools.release,
                self.tools.chart,
                "--reset-then-reuse-values",
                *(arg for path in step.files for arg in ("-f", path)),
                *helm_overrides(step.values),
                "--description",
                step.record.describe(),
                "--timeout",
                f"{self.tools.wait_seconds}s",
                *(() if step.hooks else ("--no-hooks",)),
            )
            if step.wait_for is not None:
                self.wait_rolled_out([*state.services, *state.worker_workloads], step.wait_for)
            if step.settle_seconds > 0:
                self.say(f"   waiting {step.settle_seconds:g}s for clients to follow")
                self.sleep(step.settle_seconds)

    def wait_rolled_out(self, workloads: Sequence[str], color: Color) -> None:
        for workload in workloads:
            self._kubectl(
                "rollout",
                "status",
                f"deployment/{deployment_name(workload, color)}",
                f"--timeout={self.tools.wait_seconds}s",
            )

    # -- reaching pods --------------------------------------------------------------------

    def endpoints(self, service: str, port_name: str = "grpc") -> list[Instance]:
        """The ready, non-terminating endpoints of Service `service`, one per pod."""
        found = self._json(
            self._kubectl(
                "get", "endpointslices", "-l", f"{SERVICE_NAME_LABEL}={service}", "-o", "json"
            )
        )
        items = found.get("items", []) if isinstance(found, dict) else []
        return instances_from_slices(service, items, port_name)

    def pods(self, workload: str, color: Color) -> list[PodStatus]:
        selector = (
            f"app.kubernetes.io/instance={self.tools.release},"
            f"app.kubernetes.io/name={workload},color={color}"
        )
        found = self._json(self._kubectl("get", "pods", "-l", selector, "-o", "json"))
        items = found.get("items", []) if isinstance(found, dict) else []
        return sorted(map(PodStatus.from_json, items), key=lambda pod: pod.name)

    @contextlib.contextmanager
    def port_forward(self, pod: str, port: int) -> Iterator[str]:
        """A local address forwarded to `port` of `pod`."""
        argv = self._argv(
            self.tools.kubectl, "port-forward", f"pod/{pod}", f":{port}", "--address", "127.0.0.1"
        )
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

    def scrape(self, address: str, timeout: float = 10.0) -> str:
        """The `/metrics` page at `address` (a port-forward: no proxy may capture it)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{address}/metrics", timeout=timeout) as reply:
                text: str = reply.read().decode()
        except OSError as error:
            raise CommandFailed([f"GET http://{address}/metrics"], str(error)) from error
        return text

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
