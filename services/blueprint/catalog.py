"""Every service Blueprint runs, by discovery name.

Specs are imported lazily so `blueprint call diag ...` does not load every
service's code.
"""

from __future__ import annotations

import importlib

from blueprint.mesh.server import ServiceSpec

# name -> module holding a `SPEC`; `blueprint up` runs them in this order.
SERVICES: dict[str, str] = {
    "diag": "blueprint.diag.service",
    "shortener": "blueprint.shortener.service",
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
