"""Stopping background tasks without letting a stuck one stop the process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout: float = 2.0) -> None:
    """Cancel `tasks` and wait for them at most `timeout` seconds.

    Bounded because a library can swallow a cancellation (redis-py's asyncio
    client has done so mid-read): shutdown must finish within the drain grace
    whatever a background loop does, so a task that ignores the cancel is
    logged and left behind rather than awaited forever.
    """
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in stuck:
        log.warning("task %s ignored cancellation; leaving it behind", task.get_name())


def reraise_if_cancelled(error: BaseException) -> None:
    """Raise CancelledError if the current task was asked to stop: a client library that
    met the cancel mid-read (redis-py has) may turn it into its own error, and a loop
    that retries on that error would then never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error
