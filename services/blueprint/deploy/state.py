"""A Blueprint release as plain data: what `plan` decides from.

Read from three places: `helm history` (which revision is deployed, whether a newer
one failed or is still pending, and the rollout's own record), `helm get values
--all --revision N` of the deployed revision (the chart's values contract:
`activeColor`, `colors.<c>.tag` and `.settings`, `previewReplicas`, `services`,
`workers`, `rollout.analysis`), and the `<workload>-<colour>` Deployments (what
is actually running). Each `helm upgrade` the rollout makes carries its record as
the revision's `--description`, so the phase of a rollout lives in the release's
history, and any machine can continue it.

Only the deployed revision counts: a failed upgrade leaves its values in helm's
newest revision, and acting on those once reversed a rollout (issue 9).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from blueprint.deploy.analysis import Policy

Color = Literal["blue", "green"]
COLORS: tuple[Color, ...] = get_args(Color)

Phase = Literal["deploy", "promote", "done", "rollback", "rolled-back"]
PHASES: tuple[Phase, ...] = get_args(Phase)
RECORD_PREFIX = "blueprint rollout:"
# Helm's history shows these for upgrades that took effect.
LIVE_REVISION_STATUSES = frozenset({"deployed", "superseded"})
# `helm rollback RELEASE N` describes its new revision so.
ROLLED_BACK_TO = re.compile(r"^Rollback to (\d+)$")
# The values a colour's pods are rendered from once pinned (`colors.<c>.settings`).
PINNED_KEYS = ("defaults", "services", "workers")


class ReleaseError(ValueError):
    """The release does not look like a Blueprint release (or cannot be read)."""


def other(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


def deployment_name(workload: str, color: Color) -> str:
    return f"{workload}-{color}"


def preview_service(service: str) -> str:
    return f"{service}-preview"


def worker_workload(worker: str) -> str:
    """The chart's name for a worker's Deployments (without the colour) and its pods."""
    return f"{worker}-worker"


def image_ref(image: str) -> str:
    """What follows the repository: `registry:5000/blueprint:1.2@sha256:ab` -> `1.2@sha256:ab`."""
    name, at, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return f"{tag}{at}{digest}"


def has_digest(ref: str) -> bool:
    return "@sha256:" in ref


@dataclass(frozen=True)
class DeploymentStatus:
    """One `<workload>-<colour>` Deployment as the cluster reports it."""

    name: str
    desired: int
    ready: int = 0
    updated: int = 0
    total: int = 0  # pods of every ReplicaSet, old ones still terminating included
    observed: bool = True  # the controller has seen the latest spec
    images: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DeploymentStatus:
        metadata, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        return cls(
            name=metadata["name"],
            desired=int(spec.get("replicas", 1)),
            ready=int(status.get("readyReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            total=int(status.get("replicas", 0)),
            observed=int(status.get("observedGeneration", 0)) >= int(metadata.get("generation", 0)),
            images=tuple(str(c.get("image", "")) for c in containers),
        )

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current spec and is ready; no old pod is left."""
        d = self.desired
        return self.observed and self.ready == d and self.updated == d and self.total == d

    def runs(self, ref: str) -> bool:
        """Every container runs `ref` (`TAG` or `TAG@sha256:...`), exactly."""
        return all(image_ref(image) == ref for image in self.images)


@dataclass(frozen=True)
class RolloutRecord:
    """Where a rollout stands; written into helm's release history by each step."""

    phase: Phase
    old: Color  # live when the rollout began: where a rollback returns
    new: Color  # the colour the rollout brings up
    tag: str
    # `name-version` of the chart the revision was made with (from helm history, not compared)
    chart: str = field(default="", compare=False)

    def describe(self) -> str:
        return f"{RECORD_PREFIX} phase={self.phase} old={self.old} new={self.new} tag={self.tag}"

    @classmethod
    def parse(cls, description: str, chart: str = "") -> RolloutRecord | None:
        if not description.startswith(RECORD_PREFIX):
            return None
        fields = dict(
            part.split("=", 1) for part in description[len(RECORD_PREFIX) :].split() if "=" in part
        )
        phase, old, new = fields.get("phase"), fields.get("old"), fields.get("new")
        if phase not in PHASES or old not in COLORS or new not in COLORS:
            return None
        return cls(phase, old, new, fields.get("tag", ""), chart)


@dataclass(frozen=True)
class Revision:
    """One entry of `helm history -o json`."""

    number: int
    status: str
    chart: str = ""
    description: str = ""

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> Revision:
        return cls(
            number=int(entry.get("revision", 0)),
            status=str(entry.get("status", "unknown")),
            chart=str(entry.get("chart", "")),
            description=str(entry.get("description", "")),
        )


@dataclass(frozen=True)
class History:
    """A release's revisions, newest first."""

    revisions: tuple[Revision, ...] = ()

    @classmethod
    def read(cls, entries: Iterable[Mapping[str, Any]]) -> History:
        found = sorted(map(Revision.from_json, entries), key=lambda r: r.number, reverse=True)
        return cls(tuple(found))

    @property
    def latest(self) -> Revision | None:
        return self.revisions[0] if self.revisions else None

    @property
    def deployed(self) -> Revision | None:
        """The revision the cluster runs: helm marks exactly one `deployed`."""
        return next((r for r in self.revisions if r.status == "deployed"), None)

    def record(self) -> RolloutRecord | None:
        """The rollout's record as of the deployed revision.

        Walks back from it through revisions that took effect; a `helm rollback`
        revision stands for the revision it returned to, so the record is that
        one's (or older), never one of the revisions it undid.
        """
        by_number = {r.number: r for r in self.revisions}
        deployed = self.deployed
        number = deployed.number if deployed else 0
        seen: set[int] = set()
        while number in by_number and number not in seen:
            seen.add(number)
            revision = by_number[number]
            if revision.status in LIVE_REVISION_STATUSES:
                record = RolloutRecord.parse(revision.description, revision.chart)
                if record is not None:
                    return record
                back = ROLLED_BACK_TO.fullmatch(revision.description)
                if back:
                    number = int(back.group(1))
                    continue
            number -= 1
        return None

    def halted(self, release: str, namespace: str | None) -> str | None:
        """Why no step may act now, with what to do; None when the newest revision is live."""
        latest, deployed = self.latest, self.deployed
        if latest is None or latest.status == "deployed":
            return None
        if deployed is None:
            return (
                f"no revision of {release} is deployed (the newest, {latest.number}, is "
                f"{latest.status}): repair the release with helm first"
            )
        rollback = f"`helm rollback {release} {deployed.number}"
        rollback += f" --namespace {namespace}`" if namespace else "`"
        if latest.status == "failed":
            return (
                f"revision {latest.number} failed ({latest.description or 'no description'}) "
                f"and may have changed part of the release; revision {deployed.number} is the "
                f"deployed one: return to it with {rollback}, then run this step again"
            )
        return (
            f"revision {latest.number} is {latest.status}: a helm operation is running or was "
            f"interrupted; wait for it, or if none runs, {rollback}, then run this step again"
        )


@dataclass(frozen=True)
class ReleaseState:
    active: Color
    tags: Mapping[Color, str]
    preview_replicas: int
    replicas: Mapping[str, int]  # enabled services -> their live replica count in values
    deployments: Mapping[str, DeploymentStatus] = field(default_factory=dict)
    record: RolloutRecord | None = None
    workers: Mapping[str, int] = field(default_factory=dict)  # enabled workers -> replicas
    # The values a pinned colour renders from ({defaults, services, workers}, as now).
    settings: Mapping[str, Any] = field(default_factory=dict)
    pinned: frozenset[Color] = frozenset()  # colours whose settings are pinned
    analysis: Policy = field(default_factory=Policy)
    ports: Mapping[str, int] = field(default_factory=lambda: {"grpc": 50051, "metrics": 9464})
    halted: str | None = None  # why no step may act: a newer revision failed or is pending

    @property
    def idle(self) -> Color:
        return other(self.active)

    @property
    def services(self) -> list[str]:
        return sorted(self.replicas)

    @property
    def worker_workloads(self) -> list[str]:
        return [worker_workload(name) for name in sorted(self.workers)]

    def deployment(self, workload: str, color: Color) -> DeploymentStatus | None:
        return self.deployments.get(deployment_name(workload, color))

    def live_replicas(self, workload: str) -> int:
        """What the live colour runs now: the cluster's count (an HPA may have moved it)."""
        live = self.deployment(workload, self.active)
        if live is not None:
            return live.desired
        if workload in self.replicas:
            return self.replicas[workload]
        return self.workers[workload.removesuffix("-worker")]

    @classmethod
    def read(
        cls,
        values: Mapping[str, Any],
        deployments: Sequence[Mapping[str, Any]] = (),
        history: Sequence[Mapping[str, Any]] = (),
        *,
        release: str = "blueprint",
        namespace: str | None = None,
    ) -> ReleaseState:
        """From `helm get values --all -o json` of the deployed revision, Deployment
        objects and `helm history -o json`."""
        try:
            active = values["activeColor"]
            colors = values["colors"]
            tags = {color: str(colors[color].get("tag") or "") for color in COLORS}
            pinned = frozenset(color for color in COLORS if colors[color].get("settings"))
            default = int(values.get("defaults", {}).get("replicas", 1))
            replicas = _enabled(values["services"], default)
            workers = _enabled(values.get("workers") or {}, default)
            preview = int(values.get("previewReplicas") or 0)
            analysis = Policy.from_values((values.get("rollout") or {}).get("analysis") or {})
            ports = {"grpc": 50051, "metrics": 9464} | {
                k: int(v) for k, v in (values.get("ports") or {}).items()
            }
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ReleaseError(f"not a Blueprint release's values ({exc!r})") from exc
        if active not in COLORS:
            raise ReleaseError(f"activeColor is {active!r}, not blue or green")
        revisions = History.read(history)
        return cls(
            active=active,
            tags=tags,
            preview_replicas=preview,
            replicas=replicas,
            deployments={
                status.name: status for status in map(DeploymentStatus.from_json, deployments)
            },
            record=revisions.record(),
            workers=workers,
            settings={key: copy.deepcopy(values.get(key) or {}) for key in PINNED_KEYS},
            pinned=pinned,
            analysis=analysis,
            ports=ports,
            halted=revisions.halted(release, namespace),
        )


def _enabled(entries: Mapping[str, Any], default_replicas: int) -> dict[str, int]:
    """Enabled entries of `services`/`workers` -> replicas (falling back to the default)."""
    found = {}
    for name, entry in entries.items():
        entry = entry or {}
        if entry.get("enabled", True):
            found[name] = (
                default_replicas if entry.get("replicas") is None else int(entry["replicas"])
            )
    return found
