"""Every service Blueprint runs, by discovery name.

Each entry names two modules: the one holding the service's `SPEC` (its code, loaded
by `blueprint serve`) and its generated protobuf module (its API, all `blueprint
call` needs), so a call does not load the service's code and its dependencies. It
also names the read-only call `blueprint rollout verify` makes to every pod.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

    from blueprint.mesh.server import ServiceSpec


@dataclass(frozen=True)
class SmokeCall:
    """A read-only call `blueprint rollout verify` makes to every pod of a preview."""

    method: str  # "/package.Service/Method", of one of the service's gRPC services
    request: Mapping[str, Any] = field(default_factory=dict)  # the request message as JSON
    answers: tuple[str, ...] = ("OK",)  # the status codes a healthy pod gives it


@dataclass(frozen=True)
class Entry:
    spec_module: str  # holds `SPEC`, a ServiceSpec
    proto_module: str  # the generated *_pb2 module of the gRPC services it serves
    # Cheap, no side effect, and through the service's own code path (a store read
    # where it has a store).
    smoke: SmokeCall


# `blueprint up` runs them in this order.
SERVICES: dict[str, Entry] = {
    "diag": Entry(
        "blueprint.diag.service",
        "blueprint.diag.v1.diag_pb2",
        SmokeCall("/blueprint.diag.v1.Diagnostics/Echo", {"payload": "blueprint rollout"}),
    ),
    "shortener": Entry(
        "blueprint.shortener.service",
        "blueprint.shortener.v1.shortener_pb2",
        # A link lookup: cache, then database. No one is expected to hold the code, but
        # an alias of that name would answer OK, which is as healthy.
        SmokeCall(
            "/blueprint.shortener.v1.Shortener/GetLink",
            {"code": "rollout-verify"},
            answers=("NOT_FOUND", "OK"),
        ),
    ),
}


class UnknownService(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown service {name!r}; services: {', '.join(SERVICES)}")


def _entry(name: str) -> Entry:
    entry = SERVICES.get(name)
    if entry is None:
        raise UnknownService(name)
    return entry


def spec(name: str) -> ServiceSpec:
    loaded: ServiceSpec = importlib.import_module(_entry(name).spec_module).SPEC
    return loaded


def api(name: str) -> list[ServiceDescriptor]:
    """The gRPC services `name` serves, from its generated module alone."""
    module = importlib.import_module(_entry(name).proto_module)
    return list(module.DESCRIPTOR.services_by_name.values())


def smoke_call(name: str) -> SmokeCall:
    return _entry(name).smoke
