"""The event loop a server runs on, and its heap settled for serving.

uvloop (libuv under asyncio's API) schedules callbacks and moves socket events in C
where the stdlib loop does it in Python; grpc.aio runs on either, and a server spends
a good part of each call in the loop (`make bench` server: the figures).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# Young-generation collections run every N allocations net of frees; each one walks
# every young container. A call allocates a few hundred short-lived objects, nearly
# all freed by reference counting before a collection could matter, so the default
# (700) collects several times a call for nothing. Older generations keep theirs.
_YOUNG_THRESHOLD = 50_000


def run(main: Coroutine[Any, Any, T], loop: Literal["uvloop", "asyncio"]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows): the stdlib loop serves
            log.warning("uvloop is not installed; serving on the stdlib event loop")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def settle_heap() -> None:
    """Once started: what start-up allocated (modules, stubs, settings) is moved out of
    the collector's sight for good, and young collections are made rarer."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, middle, old)
