"""A Blueprint release as plain data: what `plan` decides from.

Read from three places: `helm get values --all` (the chart's values contract:
`activeColor`, `colors.<c>.tag`, `previewReplicas`, `services.<svc>.enabled`
and `.replicas` falling back to `defaults.replicas`), the `<svc>-<colour>`
Deployments (what is actually running), and the rollout's own record, which
each `helm upgrade` it makes carries as its `--description`: so the phase of a
rollout lives in the release's history, and any machine can continue it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Color = Literal["blue", "green"]
COLORS: tuple[Color, ...] = get_args(Color)

Phase = Literal["deploy", "promote", "done", "rollback", "rolled-back"]
PHASES: tuple[Phase, ...] = get_args(Phase)
RECORD_PREFIX = "blueprint rollout:"
# Helm's history shows these for upgrades that took effect.
LIVE_REVISION_STATUSES = frozenset({"deployed", "superseded"})


class ReleaseError(ValueError):
    """The release does not look like a Blueprint release (or cannot be read)."""


def other(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


def deployment_name(service: str, color: Color) -> str:
    return f"{service}-{color}"


def preview_service(service: str) -> str:
    return f"{service}-preview"


@dataclass(frozen=True)
class DeploymentStatus:
    """One `<svc>-<colour>` Deployment as the cluster reports it."""

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

    def runs_tag(self, tag: str) -> bool:
        return all(image_tag(image) == tag for image in self.images)


def image_tag(image: str) -> str:
    """`registry:5000/blueprint:1.2@sha256:...` -> `1.2`; "" when untagged."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


@dataclass(frozen=True)
class RolloutRecord:
    """Where a rollout stands; written into helm's release history by each step."""

    phase: Phase
    old: Color  # live when the rollout began: where a rollback returns
    new: Color  # the colour the rollout brings up
    tag: str

    def describe(self) -> str:
        return f"{RECORD_PREFIX} phase={self.phase} old={self.old} new={self.new} tag={self.tag}"

    @classmethod
    def parse(cls, description: str) -> RolloutRecord | None:
        if not description.startswith(RECORD_PREFIX):
            return None
        fields = dict(
            part.split("=", 1) for part in description[len(RECORD_PREFIX) :].split() if "=" in part
        )
        phase, old, new = fields.get("phase"), fields.get("old"), fields.get("new")
        if phase not in PHASES or old not in COLORS or new not in COLORS:
            return None
        return cls(phase, old, new, fields.get("tag", ""))

    @classmethod
    def latest(cls, history: Iterable[Mapping[str, Any]]) -> RolloutRecord | None:
        """The newest record among `helm history -o json` entries that took effect."""
        revisions = sorted(history, key=lambda entry: int(entry.get("revision", 0)), reverse=True)
        for entry in revisions:
            if entry.get("status") in LIVE_REVISION_STATUSES:
                record = cls.parse(str(entry.get("description", "")))
                if record is not None:
                    return record
        return None


@dataclass(frozen=True)
class ReleaseState:
    active: Color
    tags: Mapping[Color, str]
    preview_replicas: int
    replicas: Mapping[str, int]  # enabled services -> their live replica count in values
    deployments: Mapping[str, DeploymentStatus] = field(default_factory=dict)
    record: RolloutRecord | None = None

    @property
    def idle(self) -> Color:
        return other(self.active)

    @property
    def services(self) -> list[str]:
        return sorted(self.replicas)

    def deployment(self, service: str, color: Color) -> DeploymentStatus | None:
        return self.deployments.get(deployment_name(service, color))

    def live_replicas(self, service: str) -> int:
        """What the live colour runs now: the cluster's count (an HPA may have moved it)."""
        live = self.deployment(service, self.active)
        return live.desired if live is not None else self.replicas[service]

    @classmethod
    def read(
        cls,
        values: Mapping[str, Any],
        deployments: Sequence[Mapping[str, Any]] = (),
        history: Sequence[Mapping[str, Any]] = (),
    ) -> ReleaseState:
        """From `helm get values --all -o json`, Deployment objects and `helm history -o json`."""
        try:
            active = values["activeColor"]
            tags = {color: str(values["colors"][color].get("tag") or "") for color in COLORS}
            default = int(values.get("defaults", {}).get("replicas", 1))
            replicas = {
                name: default if service.get("replicas") is None else int(service["replicas"])
                for name, service in values["services"].items()
                if service.get("enabled", True)
            }
            preview = int(values.get("previewReplicas") or 0)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ReleaseError(f"not a Blueprint release's values ({exc!r})") from exc
        if active not in COLORS:
            raise ReleaseError(f"activeColor is {active!r}, not blue or green")
        return cls(
            active=active,
            tags=tags,
            preview_replicas=preview,
            replicas=replicas,
            deployments={
                status.name: status for status in map(DeploymentStatus.from_json, deployments)
            },
            record=RolloutRecord.latest(history),
        )
