"""The rollout's decisions: from a release's state, the next helm value changes.

Pure: no helm, no cluster. Each function returns the steps to take, in order,
or raises `RolloutRefused` saying why not. A step changes only the values it
names (the runner passes them with `--reset-then-reuse-values`), so promoting changes
`activeColor` and nothing else: the Services' selectors flip, no pod restarts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from blueprint.deploy.state import Color, ReleaseState, RolloutRecord, deployment_name

# Docker's grammar for an image tag.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class RolloutRefused(Exception):
    """The step asked for is unsafe or meaningless in the release's current state."""


@dataclass(frozen=True)
class Step:
    why: str
    values: Mapping[str, str | int]  # the only values this step changes
    record: RolloutRecord  # where the rollout stands once the step is done
    wait_for: Color | None = None  # this colour must be rolled out before going on
    settle_seconds: float = 0.0  # a pause after, for clients to follow a selector switch


@dataclass(frozen=True)
class ServiceCheck:
    service: str
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verification:
    """What `verify` found for one colour at one tag."""

    color: Color
    tag: str
    checks: tuple[ServiceCheck, ...]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not self.problems()

    def problems(self) -> list[str]:
        return [f"{check.service}: {p}" for check in self.checks for p in check.problems]


def preview_size(state: ReleaseState) -> int:
    """Replicas for the idle colour: as many as the largest live service runs now.

    `previewReplicas` is one number for every service, so the preview is at
    least full size for each; a smaller one would be overrun at the switch.
    """
    return max((state.live_replicas(service) for service in state.services), default=1)


def readiness(state: ReleaseState, color: Color) -> dict[str, list[str]]:
    """Per service, why `color` could not take all its live traffic now (empty: it could)."""
    found: dict[str, list[str]] = {}
    tag = state.tags[color]
    for service in state.services:
        problems = found[service] = []
        name = deployment_name(service, color)
        deployment = state.deployment(service, color)
        if deployment is None:
            problems.append(f"Deployment {name} not found")
            continue
        if deployment.desired == 0:
            problems.append(f"{name} is scaled to 0")
            continue
        if not deployment.rolled_out:
            problems.append(
                f"{name} not rolled out ({deployment.ready}/{deployment.desired} ready, "
                f"{deployment.updated} updated, {deployment.total} pods)"
            )
        live = state.live_replicas(service)
        if deployment.desired < live:
            problems.append(
                f"{name} has {deployment.desired} replicas, the live colour {live}; "
                "deploy again to resize it"
            )
        if tag and not deployment.runs_tag(tag):
            problems.append(f"{name} runs {', '.join(deployment.images)}, not tag {tag}")
    return found


def readiness_problems(state: ReleaseState, color: Color) -> list[str]:
    return [f"{service}: {p}" for service, ps in readiness(state, color).items() for p in ps]


def deploy(state: ReleaseState, tag: str) -> list[Step]:
    """Put `tag` on the idle colour at full size, where the preview Services see it."""
    if not TAG.fullmatch(tag):
        raise RolloutRefused(f"{tag!r} is not an image tag")
    record = state.record
    if record is not None and record.phase == "promote":
        raise RolloutRefused(
            f"{record.new} was promoted and {record.old} is kept warm for a rollback: "
            "finish with `rollout scale-down` or undo with `rollout rollback` first"
        )
    if record is not None and record.phase == "rollback":
        raise RolloutRefused("a rollback did not finish: run `rollout rollback` again first")
    idle, size = state.idle, preview_size(state)
    return [
        Step(
            f"deploy {tag} to {idle} (idle) at {size} replicas",
            {f"colors.{idle}.tag": tag, "previewReplicas": size},
            RolloutRecord("deploy", old=state.active, new=idle, tag=tag),
            wait_for=idle,
        )
    ]


def promote(state: ReleaseState, verification: Verification) -> list[Step]:
    """Switch live traffic to the idle colour: only if it was verified, now, as it is."""
    idle, tag = state.idle, state.tags[state.idle]
    if (verification.color, verification.tag) != (idle, tag):
        raise RolloutRefused(
            f"verified {verification.color} at {verification.tag!r}, "
            f"but the preview is {idle} at {tag!r}"
        )
    problems = list(dict.fromkeys([*verification.problems(), *readiness_problems(state, idle)]))
    if problems or not verification.passed:
        raise RolloutRefused(
            f"not promoting {idle}: verification failed: " + "; ".join(problems or ["no checks"])
        )
    return [
        Step(
            f"promote {idle} ({tag}): live traffic moves from {state.active} to {idle}",
            {"activeColor": idle},
            RolloutRecord("promote", old=state.active, new=idle, tag=tag),
        )
    ]


def scale_down(state: ReleaseState) -> list[Step]:
    """Finish a promoted rollout: the old colour, idle now, goes to 0 replicas."""
    record = state.record
    if record is None or record.phase != "promote" or state.active != record.new:
        raise RolloutRefused(
            "nothing to scale down: scale-down finishes a promoted rollout; "
            "to drop a preview that was not promoted, use `rollout abort`"
        )
    return [
        Step(
            f"scale {record.old} (old, idle) down to 0 replicas",
            {"previewReplicas": 0},
            replace(record, phase="done"),
        )
    ]


def rollback(state: ReleaseState, *, settle_seconds: float = 10.0) -> list[Step]:
    """Return live traffic to the colour the last rollout started from; scale the new one down.

    Before a promotion that only drops the preview. After one, the old colour
    is first brought back to full size if it was already scaled down, then the
    selectors flip back, and the failed colour goes to 0 once clients have had
    `settle_seconds` to follow the switch.
    """
    record = state.record
    if record is None or record.phase == "rolled-back":
        raise RolloutRefused(
            "no rollout to roll back: helm history holds no unfinished `blueprint rollout`"
        )
    old, failed = record.old, record.new
    going_back = replace(record, phase="rollback")
    steps = []
    if state.active != old:
        if readiness_problems(state, old):
            size = preview_size(state)
            steps.append(
                Step(
                    f"bring {old} ({state.tags[old]}) back to {size} replicas",
                    {"previewReplicas": size},
                    going_back,
                    wait_for=old,
                )
            )
        steps.append(
            Step(
                f"switch live traffic back from {failed} to {old}",
                {"activeColor": old},
                going_back,
                settle_seconds=settle_seconds,
            )
        )
    steps.append(
        Step(
            f"scale {failed} ({state.tags[failed]}) down to 0 replicas",
            {"previewReplicas": 0},
            replace(record, phase="rolled-back"),
        )
    )
    return steps
