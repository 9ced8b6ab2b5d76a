"""Server instructions per call, counted by callgrind: a cost the machine's load does not
move, unlike calls/s or even CPU time on a shared VM.

`python -m bench.instructions [--calls N]` (minutes: each server runs under valgrind;
not part of `make bench`). Each server of `bench.server_cost` but the every-call-traced
one starts under callgrind with counting off; after a warm-up a raw grpc.aio client
(Echo 64 B, concurrency 16) makes N calls with counting on, and the count, all threads
of the server process, is divided by N.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import subprocess
from pathlib import Path

import grpc.aio

from bench.common import LOG_DIR, diag_servers, print_table, progress, write_result
from bench.server_cost import BARE, OFF, ON, SERVERS
from blueprint.diag.v1.diag_pb2 import EchoRequest
from blueprint.diag.v1.diag_pb2_grpc import DiagnosticsStub

NAME = "server_instructions"
MODES = (BARE, ON, OFF)
CONCURRENCY = 16
WARMUP_CALLS = 300
START_TIMEOUT_SECONDS = 600.0  # imports alone take a minute under valgrind


async def _calls(address: str, count: int) -> None:
    request = EchoRequest(payload="x" * 64)
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)
        echo = functools.partial(DiagnosticsStub(channel).Echo, request, timeout=600)
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await echo()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _count(mode: str, calls: int) -> int:
    instance, env, command = SERVERS[mode]
    out = LOG_DIR / f"{instance}.callgrind"
    for old in LOG_DIR.glob(f"{out.name}*"):
        old.unlink()
    launcher = ("valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}")
    commands = {instance: command} if command is not None else None
    with diag_servers(
        {instance: env}, commands, launcher=launcher, start_timeout=START_TIMEOUT_SECONDS
    ) as (server,):
        asyncio.run(_calls(server.address, WARMUP_CALLS))
        _control(server.process.pid, "--instr=on")
        asyncio.run(_calls(server.address, calls))
        _control(server.process.pid, "--instr=off")
        _control(server.process.pid, "--dump")
    dump = Path(f"{out}.1")
    totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
    return int(totals.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls counted per server")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind (apt-get install valgrind)")
    per_call: dict[str, int] = {}
    for mode in MODES:
        progress(f"instructions: {mode} under callgrind")
        per_call[mode] = _count(mode, args.calls) // args.calls
    rows = [
        [mode, f"{count:,}", f"{count / per_call[BARE]:.2f}"] for mode, count in per_call.items()
    ]
    print_table(
        f"Server instructions per call (callgrind): Echo 64 B, raw grpc.aio client,"
        f" concurrency {CONCURRENCY}, {args.calls:,} calls counted",
        ["server", "instructions/call", "vs bare"],
        rows,
        ["All threads of the server process; user space only (system calls are not counted)."],
    )
    path = write_result(
        NAME,
        {"calls": args.calls, "concurrency": CONCURRENCY, "payload_bytes": 64},
        {"instructions_per_call": per_call},
    )
    progress(f"instructions: wrote {path}")


if __name__ == "__main__":
    main()
