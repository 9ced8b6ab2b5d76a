"""Waiting for a condition with a deadline, for state that offers nothing to await."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], timeout: float, what: str = "") -> float:
    """Seconds until `condition()` held; AssertionError if it did not within `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what or condition}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started
