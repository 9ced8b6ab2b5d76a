"""The rollout's decisions: from a release's state, the next helm value changes.

Pure: no helm, no cluster. Each function returns the steps to take, in order,
or raises `RolloutRefused` saying why not. A step changes only the values it
names (the runner passes them with `--reset-then-reuse-values`), so promoting changes
`activeColor` and nothing a pod is rendered from: the Services' selectors flip,
no pod restarts. Only `deploy` runs the chart's hooks (the migration Job: an
expand step both colours live with); every other step skips them, so a rollback
never depends on the newer image's migration.

Settings go out blue-green like an image: each colour renders its pods from
values pinned in `colors.<colour>.settings`. `deploy` pins the live colour (if it
is not yet) and unpins the idle one, which then takes the release's current
values; `promote` pins the new colour to what it was verified with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from blueprint.deploy.state import (
    Color,
    ReleaseState,
    RolloutRecord,
    deployment_name,
    has_digest,
)

# Docker's grammar for an image tag, optionally pinned to a digest (as the chart takes it).
IMAGE_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$")
# Values a `deploy -f FILE` must leave alone: the rollout owns them.
OWNED_KEYS = ("activeColor", "colors", "previewReplicas")

Value = str | int | None | Mapping[str, Any]  # None: `--set key=null`, the key is dropped


class RolloutRefused(Exception):
    """The step asked for is unsafe or meaningless in the release's current state."""


@dataclass(frozen=True)
class Step:
    why: str
    values: Mapping[str, Value]  # the only values this step changes
    record: RolloutRecord  # where the rollout stands once the step is done
    wait_for: Color | None = None  # this colour must be rolled out before going on
    settle_seconds: float = 0.0  # a pause after, for clients to follow a selector switch
    files: tuple[str, ...] = ()  # values files (-f) the operator gave `deploy`
    hooks: bool = False  # run the chart's hooks (migrations): `deploy` only


@dataclass(frozen=True)
class ServiceCheck:
    service: str  # a workload: a service, or a worker's `<name>-worker`
    problems: tuple[str, ...] = ()
    note: str = ""  # what was checked, when it went well


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


def check_acting(state: ReleaseState) -> None:
    """No step acts on a release whose newest revision failed or is still pending."""
    if state.halted:
        raise RolloutRefused(state.halted)


def preview_size(state: ReleaseState) -> int:
    """Replicas for the idle colour: as many as the largest live service runs now.

    `previewReplicas` is one number for every service, so the preview is at
    least full size for each; a smaller one would be overrun at the switch.
    """
    return max((state.live_replicas(service) for service in state.services), default=1)


def readiness(state: ReleaseState, color: Color) -> dict[str, list[str]]:
    """Per workload (services, then workers), why `color` could not take over now."""
    found: dict[str, list[str]] = {}
    ref = state.tags[color]
    for workload in [*state.services, *state.worker_workloads]:
        problems = found[workload] = []
        name = deployment_name(workload, color)
        deployment = state.deployment(workload, color)
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
        live = state.live_replicas(workload)
        if deployment.desired < live:
            problems.append(
                f"{name} has {deployment.desired} replicas, the live colour {live}; "
                "deploy again to resize it"
            )
        if ref and not deployment.runs(ref):
            problems.append(f"{name} runs {', '.join(deployment.images)}, not {ref}")
    return found


def readiness_problems(state: ReleaseState, color: Color) -> list[str]:
    return [f"{workload}: {p}" for workload, ps in readiness(state, color).items() for p in ps]


def _pin(state: ReleaseState, color: Color) -> dict[str, Value]:
    """Pin `color` to the values it runs with now, if it is not pinned yet (renders the same)."""
    return {} if color in state.pinned else {f"colors.{color}.settings": dict(state.settings)}


def deploy(
    state: ReleaseState, ref: str, *, values_files: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Step]:
    """Put `ref` on the idle colour at full size, where the preview Services see it.

    `values_files` (path -> its content) carry a settings change: the idle colour
    renders with them, the live colour stays pinned to what it runs.
    """
    check_acting(state)
    if not IMAGE_REF.fullmatch(ref):
        raise RolloutRefused(f"{ref!r} is not an image reference: TAG or TAG@sha256:<64 hex>")
    for path, content in (values_files or {}).items():
        owned = sorted(key for key in OWNED_KEYS if key in content)
        if owned:
            raise RolloutRefused(
                f"{path} sets {', '.join(owned)}: the rollout owns them; leave them out"
            )
    record = state.record
    if record is not None and record.phase == "promote":
        raise RolloutRefused(
            f"{record.new} was promoted and {record.old} is kept warm for a rollback: "
            "finish with `rollout scale-down` or undo with `rollout rollback` first"
        )
    if record is not None and record.phase == "rollback":
        raise RolloutRefused("a rollback did not finish: run `rollout rollback` again first")
    live, idle, size = state.active, state.idle, preview_size(state)
    values: dict[str, Value] = {f"colors.{idle}.tag": ref, "previewReplicas": size}
    values |= _pin(state, live)
    if idle in state.pinned:
        values[f"colors.{idle}.settings"] = None  # the preview takes the current values
    return [
        Step(
            f"deploy {ref} to {idle} (idle) at {size} replicas"
            + (" with its workers paused" if state.workers else ""),
            values,
            RolloutRecord("deploy", old=live, new=idle, tag=ref),
            wait_for=idle,
            files=tuple(values_files or ()),
            hooks=True,
        )
    ]


def digest_advice(ref: str) -> str | None:
    """A tag can be moved to other content; a digest cannot. None when `ref` has one."""
    if has_digest(ref):
        return None
    return (
        f"{ref} is a tag, which its registry can move: pods pull it with pullPolicy Always. "
        f"Prefer {ref}@sha256:<digest> (`crane digest` or `docker buildx imagetools inspect`)"
    )


def promote(
    state: ReleaseState,
    verification: Verification,
    *,
    chart: str | None = None,
    allow_chart_change: bool = False,
) -> list[Step]:
    """Switch live traffic to the idle colour: only a deployed preview, verified now, as it is.

    `chart` is the chart this step would upgrade with (`name-version`): a chart other
    than the one the preview was deployed with may re-render the pods at the
    switch, so it takes `allow_chart_change`.
    """
    check_acting(state)
    idle, tag = state.idle, state.tags[state.idle]
    record = state.record
    if record is None or record.phase != "deploy":
        raise RolloutRefused(
            f"nothing to promote: the last rollout step is "
            f"{record.phase + ' of ' + record.new if record else 'none'}; "
            "`rollout deploy TAG` puts a preview on the idle colour first"
        )
    if record.new != idle:
        raise RolloutRefused(
            f"the preview was deployed to {record.new}, but {idle} is idle: activeColor "
            "was changed outside the rollout; `rollout deploy` again"
        )
    if record.tag != tag:
        raise RolloutRefused(f"the preview was deployed at {record.tag!r}, but {idle} runs {tag!r}")
    if chart and record.chart and chart != record.chart and not allow_chart_change:
        raise RolloutRefused(
            f"the preview was deployed with chart {record.chart}, and this is {chart}: "
            "promoting would re-render the pods with another chart; use the same chart, "
            "or --allow-chart-change"
        )
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
            {"activeColor": idle, **_pin(state, idle)},
            replace(record, phase="promote"),
        )
    ]


def scale_down(state: ReleaseState) -> list[Step]:
    """Finish a promoted rollout: the old colour, idle now, goes to 0 replicas."""
    check_acting(state)
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
    `settle_seconds` to follow the switch. The old colour is pinned to its own
    settings, so it comes back as it was.
    """
    check_acting(state)
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
