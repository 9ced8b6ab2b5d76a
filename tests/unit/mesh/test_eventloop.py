"""The server's event loop is the one chosen, and settling the heap keeps collecting."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest
import uvloop

from blueprint.mesh import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_chosen_by_name() -> None:
    assert issubclass(eventloop.run(_loop_type(), "uvloop"), uvloop.Loop)


def test_the_stdlib_loop_stays_available() -> None:
    assert not issubclass(eventloop.run(_loop_type(), "asyncio"), uvloop.Loop)


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settling_freezes_what_exists_and_still_collects_cycles() -> None:
    eventloop.settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] > 700

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector can free
    del a, b
    assert gc.collect() >= 2


def test_without_uvloop_the_stdlib_loop_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import raises ImportError
    loop_type = eventloop.run(_loop_type(), "uvloop")
    assert issubclass(loop_type, asyncio.BaseEventLoop)
    assert not issubclass(loop_type, uvloop.Loop)
    assert "stdlib event loop" in caplog.text
