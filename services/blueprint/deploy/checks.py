"""Looking at a colour's pods, one by one: `verify` before the switch, the analysis after.

`verify` reaches every ready pod of every service through the preview Service's
EndpointSlices (what clients will be given once it is live) and every worker pod
of the idle colour (running, paused, until its colour is live), each through
its own `kubectl port-forward`: gRPC health, the services each serves, and the
service's declared read-only smoke call. A pod missing from the endpoints fails it.

`analyse` watches the colour just made live for `rollout.analysis.windowSeconds`,
reading each pod's own `/metrics` as the window opens and closes (blueprint.deploy.analysis
judges the difference); a pod that restarted, or a Deployment no longer rolled
out, fails it too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from blueprint.deploy import analysis
from blueprint.deploy.analysis import Analysis, Calls
from blueprint.deploy.plan import ServiceCheck, Verification, check_acting, readiness
from blueprint.deploy.runner import CommandFailed, Runner
from blueprint.deploy.state import Color, ReleaseState, preview_service


def verify_preview(runner: Runner, state: ReleaseState) -> Verification:
    check_acting(state)
    color = state.idle
    ready = readiness(state, color)
    checks = [_verify_service(runner, state, color, s, ready[s]) for s in state.services]
    checks += [_verify_worker(runner, state, color, w, ready[w]) for w in state.worker_workloads]
    return Verification(color, state.tags[color], tuple(checks))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _verify_service(
    runner: Runner, state: ReleaseState, color: Color, service: str, problems: list[str]
) -> ServiceCheck:
    deployment = state.deployment(service, color)
    if deployment is None or deployment.desired == 0:
        return ServiceCheck(service, tuple(problems))
    preview = preview_service(service)
    try:
        endpoints = runner.endpoints(preview)
    except CommandFailed as error:
        return ServiceCheck(service, (*problems, f"cannot list its endpoints: {error}"))
    if len(endpoints) < deployment.desired:
        problems.append(
            f"{len(endpoints)} of {deployment.desired} pods are ready endpoints of {preview}"
        )
    for endpoint in endpoints:
        if _is_address(endpoint.instance_id):  # no targetRef: no pod to forward to
            problems.append(f"endpoint {endpoint.address} of {preview} names no pod")
            continue
        port = int(endpoint.address.rpartition(":")[2])
        problems += _probe(runner, endpoint.instance_id, port, service)
    return ServiceCheck(service, tuple(problems), note=_plural(len(endpoints), "pod"))


def _verify_worker(
    runner: Runner, state: ReleaseState, color: Color, workload: str, problems: list[str]
) -> ServiceCheck:
    deployment = state.deployment(workload, color)
    if deployment is None or deployment.desired == 0:
        return ServiceCheck(workload, tuple(problems))
    try:
        pods = [pod for pod in runner.pods(workload, color) if pod.ready]
    except CommandFailed as error:
        return ServiceCheck(workload, (*problems, f"cannot list its pods: {error}"))
    if len(pods) < deployment.desired:
        problems.append(f"{len(pods)} of {deployment.desired} pods are ready")
    for pod in pods:
        problems += _probe(runner, pod.name, state.ports["grpc"], workload)
    note = f"{_plural(len(pods), 'pod')}, paused until live"
    return ServiceCheck(workload, tuple(problems), note=note)


def _probe(runner: Runner, pod: str, port: int, workload: str) -> list[str]:
    try:
        with runner.port_forward(pod, port) as address:
            return [f"{pod}: {problem}" for problem in runner.probe(address, workload)]
    except CommandFailed as error:
        return [f"{pod}: port-forward failed: {error}"]


@dataclass(frozen=True)
class _Seen:
    calls: Calls
    restarts: int


def _scrape(
    runner: Runner, state: ReleaseState, color: Color, service: str
) -> tuple[dict[str, _Seen], list[str]]:
    """Each running pod's server calls so far, and what could not be read."""
    seen: dict[str, _Seen] = {}
    problems: list[str] = []
    try:
        pods = runner.pods(service, color)
    except CommandFailed as error:
        return seen, [f"cannot list its pods: {error}"]
    for pod in pods:
        if not pod.ready:
            continue
        try:
            with runner.port_forward(pod.name, state.ports["metrics"]) as address:
                seen[pod.name] = _Seen(analysis.read_calls(runner.scrape(address)), pod.restarts)
        except (CommandFailed, ValueError) as error:
            problems.append(f"cannot read {pod.name}'s /metrics: {error}")
    return seen, problems


def analyse(runner: Runner, state: ReleaseState, color: Color) -> Analysis:
    """Watch `color`, just made live, for the policy's window; the verdict per service."""
    policy = state.analysis
    before = {service: _scrape(runner, state, color, service) for service in state.services}
    runner.say(f"   watching {color}'s own metrics for {policy.window_seconds:g}s")
    runner.sleep(policy.window_seconds)
    verdicts = []
    for service in state.services:
        opened, problems = before[service]
        after, closing = _scrape(runner, state, color, service)
        problems = [*problems, *closing]
        total = Calls()
        for pod, now in after.items():
            then = opened.get(pod)
            if then is not None and now.restarts > then.restarts:
                problems.append(f"{pod} restarted during the analysis")
            total += analysis.increase(then.calls if then else None, now.calls)
        verdicts.append(analysis.judge(service, total, policy, problems))
    colour_problems = [
        f"{workload}: {problem}"
        for workload, found in readiness(runner.read_state(), color).items()
        for problem in found
    ]
    return Analysis(color, policy.window_seconds, tuple(verdicts), tuple(colour_problems))
