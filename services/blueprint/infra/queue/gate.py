"""Whether a worker's colour is live: only the live colour's workers consume.

On Kubernetes both colours run workers while a new release is previewed, so the
preview's are started and verified before the switch; but a consumer takes real
work off the queue, so the idle colour's must not. The chart mounts the live colour
in a file (a ConfigMap volume, which the kubelet rewrites in place after a switch)
and tells each worker its own colour; the gate compares the two, now and then.
The worker stays up and healthy while paused: only its consumers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from blueprint.mesh.settings import Settings

log = logging.getLogger(__name__)


class LiveColorGate:
    """Open while `path` names `color`. A file that cannot be read keeps the last answer
    (closed at first), since a half-written or missing file says nothing new."""

    def __init__(self, color: str, path: Path, *, poll_seconds: float = 2.0) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be above 0")
        self.color = color
        self.path = path
        self.poll_seconds = poll_seconds
        self._open = False

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveColorGate | None:
        """None when the worker has no colour: it always consumes (`blueprint up`, VMs)."""
        if settings.worker_color is None or settings.worker_live_color_file is None:
            return None
        return cls(
            settings.worker_color,
            settings.worker_live_color_file,
            poll_seconds=settings.worker_live_poll_seconds,
        )

    def is_open(self) -> bool:
        try:
            live = self.path.read_text().strip()
        except OSError as exc:
            log.warning(
                "cannot read the live colour", extra={"path": str(self.path), "error": str(exc)}
            )
            return self._open
        self._open = live == self.color
        return self._open

    async def wait(self, *, open_: bool, stop: asyncio.Event) -> None:
        """Until the gate is `open_`, or `stop` is set."""
        while not stop.is_set() and self.is_open() != open_:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await stop.wait()

    async def run_while_live(
        self, run: Callable[[asyncio.Event], Awaitable[int]], stop: asyncio.Event
    ) -> int:
        """Run `run(until)` each time the colour goes live, `until` set when it goes idle
        (or `stop` is set); returns when `stop` is set, or `run`'s code if it failed."""
        while True:
            if not self.is_open():
                log.info("paused: this colour is not live", extra={"color": self.color})
            await self.wait(open_=True, stop=stop)
            if stop.is_set():
                return 0
            log.info("this colour is live: consuming", extra={"color": self.color})
            until = asyncio.Event()
            closer = asyncio.create_task(self._close(until, stop), name="live colour gate")
            try:
                code = await run(until)
            finally:
                closer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await closer
            if code or stop.is_set():
                return code

    async def _close(self, until: asyncio.Event, stop: asyncio.Event) -> None:
        await self.wait(open_=False, stop=stop)
        until.set()
