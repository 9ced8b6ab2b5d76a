"""Deadline propagation: an outgoing call never outlives the incoming call it serves.

grpcio does not carry a server's deadline into the calls its handler makes, so
the server runtime records the incoming deadline here and the mesh client
shortens every outgoing timeout to fit inside it.
"""

from __future__ import annotations

import contextvars
import time

# Kept back from every propagated deadline: the reply needs time to travel back, and
# gRPC rounds a timeout up when it encodes it on the wire, so without it a callee
# could be told it has more time than its caller will actually wait.
RETURN_TRIP_ALLOWANCE_SECONDS = 0.002

# Absolute time.monotonic() by which the incoming call must be answered; None outside a call.
_incoming_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "blueprint_incoming_deadline", default=None
)


def set_incoming(
    time_remaining: float | None, *, now: float | None = None
) -> contextvars.Token[float | None]:
    """Called by the server runtime when a call starts (`context.time_remaining()`);
    `now`: time.monotonic() read just before, if the caller has it."""
    if time_remaining is None:
        return _incoming_deadline.set(None)
    return _incoming_deadline.set((time.monotonic() if now is None else now) + time_remaining)


def reset_incoming(token: contextvars.Token[float | None]) -> None:
    _incoming_deadline.reset(token)


def without_incoming() -> contextvars.Context:
    """A copy of the current context with no incoming deadline, for a task that outlives
    the call that starts it (`asyncio.create_task(work, context=without_incoming())`):
    a task copies its creator's context, and would otherwise stop at that call's deadline."""
    context = contextvars.copy_context()
    context.run(_incoming_deadline.set, None)
    return context


def remaining_incoming() -> float | None:
    """Seconds left on the call being served, or None when there is no such call or deadline."""
    deadline = _incoming_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def outgoing_timeout(requested: float | None, default: float) -> float:
    """The timeout an outgoing call gets: what the caller asked for (else the default),
    never more than what is left of the incoming call (less the return trip).
    May be <= 0: already expired."""
    timeout = default if requested is None else requested
    left = remaining_incoming()
    return timeout if left is None else min(timeout, left - RETURN_TRIP_ALLOWANCE_SECONDS)
