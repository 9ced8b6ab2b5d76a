"""A client's handle on one instance: its channel and the load a balancer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import grpc
    import grpc.aio

    from blueprint.mesh.discovery.base import Instance


class Load(Protocol):
    """The load signal of one endpoint, fed by the client around every call.

    Selection (which endpoint) and load metric (how busy) vary independently,
    as in Finagle and tower: a balancer chooses the metric through `new_load`.
    """

    outstanding: int

    def start(self) -> None:
        """A call was sent to the endpoint."""

    def finish(self, rtt_seconds: float, code: grpc.StatusCode | None = None) -> None:
        """A call to the endpoint ended after `rtt_seconds` with `code` (None: OK)."""

    def cost(self) -> float:
        """Lower is better; comparable across endpoints of one balancer."""


@dataclass(eq=False, slots=True)
class Endpoint:
    instance: Instance
    load: Load
    channel: grpc.aio.Channel | None = None  # None in balancer tests
    # Multicallables by method path, built once per endpoint: the hot path reuses them.
    calls: dict[str, Any] = field(default_factory=dict)
    # The instance's id, kept: it is read several times a call (the instance may be
    # replaced by one with another serving flag, never by another instance).
    instance_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.instance_id = self.instance.instance_id

    @property
    def address(self) -> str:
        return self.instance.address

    @property
    def weight(self) -> int:
        return self.instance.weight

    def __repr__(self) -> str:
        return f"Endpoint({self.instance_id}@{self.address})"
