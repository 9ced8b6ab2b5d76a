"""Every service Blueprint runs, by discovery name.

Specs are imported lazily so `blueprint call diag ...` does not load every
service's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blueprint.mesh.server import ServiceSpec

# name -> module holding a `SPEC`; `blueprint up` runs them in this order.
SERVICES: dict[str, str] = {
    "diag": "blueprint.diag.service",
    "shortener": "blueprint.shortener.service",
}


@dataclass(frozen=True)
class SmokeCall:
    """A read-only call `blueprint rollout verify` makes to every pod of a preview."""

    method: str  # "/package.Service/Method", of one of the service's gRPC services
    request: Mapping[str, Any] = field(default_factory=dict)  # the request message as JSON
    answers: tuple[str, ...] = ("OK",)  # the status codes a healthy pod gives it


# Every service declares one: cheap, no side effect, and through the service's own
# code path (a store read where it has a store).
SMOKE_CALLS: dict[str, SmokeCall] = {
    "diag": SmokeCall("/blueprint.diag.v1.Diagnostics/Echo", {"payload": "blueprint rollout"}),
    # A link lookup: cache, then database. No one is expected to hold the code, but
    # an alias of that name would answer OK, which is as healthy.
    "shortener": SmokeCall(
        "/blueprint.shortener.v1.Shortener/GetLink",
        {"code": "rollout-verify"},
        answers=("NOT_FOUND", "OK"),
    ),
}


class UnknownService(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown service {name!r}; services: {', '.join(SERVICES)}")


def spec(name: str) -> ServiceSpec:
    module = SERVICES.get(name)
    if module is None:
        raise UnknownService(name)
    loaded: ServiceSpec = importlib.import_module(module).SPEC
    return loaded


def smoke_call(name: str) -> SmokeCall:
    try:
        return SMOKE_CALLS[name]
    except KeyError:
        raise UnknownService(name) from None
