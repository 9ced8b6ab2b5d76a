"""The live-colour gate: a worker consumes only while the mounted file names its colour."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blueprint.infra.queue.gate import LiveColorGate
from blueprint.mesh.settings import Settings


def test_open_only_while_the_file_names_the_colour(tmp_path: Path) -> None:
    live = tmp_path / "activeColor"
    gate = LiveColorGate("green", live)
    assert not gate.is_open()  # no file yet: closed
    live.write_text("green\n")
    assert gate.is_open()
    live.unlink()  # the kubelet swapping it, say: the last answer stands
    assert gate.is_open()
    live.write_text("blue")
    assert not gate.is_open()


def test_a_worker_without_a_colour_has_no_gate(tmp_path: Path) -> None:
    assert LiveColorGate.from_settings(Settings()) is None
    gate = LiveColorGate.from_settings(
        Settings(worker_color="blue", worker_live_color_file=tmp_path / "f")
    )
    assert gate is not None and gate.color == "blue"


def test_a_colour_without_its_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set together"):
        Settings(worker_color="blue")


async def test_each_live_period_runs_once_and_ends_when_the_colour_goes_idle(
    tmp_path: Path,
) -> None:
    live = tmp_path / "activeColor"
    live.write_text("blue")
    gate = LiveColorGate("green", live, poll_seconds=0.01)
    stop = asyncio.Event()
    periods: list[str] = []

    async def run(until: asyncio.Event) -> int:
        periods.append("started")
        live.write_text("blue")  # a rollback, while consuming
        await until.wait()
        periods.append("ended")
        if len(periods) < 4:
            live.write_text("green")  # promoted again
        else:
            stop.set()
        return 0

    task = asyncio.create_task(gate.run_while_live(run, stop))
    await asyncio.sleep(0.05)
    assert periods == []  # paused: blue is live
    live.write_text("green")
    assert await asyncio.wait_for(task, 10) == 0
    assert periods == ["started", "ended", "started", "ended"]


async def test_a_failing_period_ends_the_worker_with_its_code(tmp_path: Path) -> None:
    live = tmp_path / "activeColor"
    live.write_text("green")
    gate = LiveColorGate("green", live, poll_seconds=0.01)

    async def crash(until: asyncio.Event) -> int:
        return 1

    assert await asyncio.wait_for(gate.run_while_live(crash, asyncio.Event()), 10) == 1
