"""Instructions per call, counted by callgrind: a cost the machine's load does not move,
unlike calls/s or even CPU time on a shared VM.

`python -m bench.instructions [--calls N]` (minutes: each process runs under valgrind;
not part of `make bench`). Each server of `bench.server_cost` but the every-call-traced
one, and blueprint serve on the stdlib loop, starts under callgrind with counting off;
after a warm-up a raw grpc.aio client (Echo 64 B, concurrency 16) makes N calls with
counting on, and the count, all threads of the server process, is divided by N. Then
the client side: the same calls from a client process under callgrind, through a raw
channel, the mesh client, and the mesh client with metrics and unsampled spans, all to
one bare server.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc.aio

from bench.common import LOG_DIR, diag_servers, print_table, progress, write_result
from bench.mesh_overhead import _mesh_client
from bench.server_cost import BARE, OFF, ON
from bench.server_cost import SERVERS as SERVER_COST_SERVERS
from blueprint.diag.v1.diag_pb2 import EchoRequest, EchoResponse
from blueprint.diag.v1.diag_pb2_grpc import DiagnosticsStub

NAME = "server_instructions"
ON_ASYNCIO = "blueprint serve, telemetry on, asyncio loop"
# server_cost's servers, and one that shows what the event loop alone is worth.
SERVERS = {
    **SERVER_COST_SERVERS,
    ON_ASYNCIO: (
        "diag-telemetry-on-asyncio",
        {"BLUEPRINT_TRACE_SAMPLING_RATIO": "0", "BLUEPRINT_EVENT_LOOP": "asyncio"},
        None,
    ),
}
MODES = (BARE, ON, OFF, ON_ASYNCIO)
CONCURRENCY = 16
WARMUP_CALLS = 300
START_TIMEOUT_SECONDS = 600.0  # imports alone take a minute under valgrind


CLIENT_MODES = {
    "raw grpc.aio channel": "raw",
    "mesh client, telemetry off": "mesh",
    "mesh client, metrics + unsampled spans": "telemetry",
}
Echo = Callable[[], Awaitable[EchoResponse]]


async def _drive(echo: Echo, count: int) -> None:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await echo()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _calls(address: str, count: int) -> None:
    request = EchoRequest(payload="x" * 64)
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)
        await _drive(functools.partial(DiagnosticsStub(channel).Echo, request, timeout=600), count)


async def _client(kind: str, address: str, count: int) -> None:
    """The client process: warm up, then one batch of calls between two lines on stdin,
    so the parent turns counting on and off around exactly those calls."""
    request = EchoRequest(payload="x" * 64)
    if kind == "raw":
        channel = grpc.aio.insecure_channel(address)
        stub = DiagnosticsStub(channel)
    else:
        client = _mesh_client("round_robin", address, 0.0 if kind == "telemetry" else None)
        await client.wait_for_endpoints("diag", 60)
        stub = client.stub("diag", DiagnosticsStub)
    echo = functools.partial(stub.Echo, request, timeout=600)
    await _drive(echo, WARMUP_CALLS)
    loop = asyncio.get_running_loop()
    for _ in range(2):
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        await _drive(echo, count)
        count = 0  # the second turn only waits for the parent's dump


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


def _count_client(kind: str, address: str, calls: int) -> int:
    out = LOG_DIR / f"client-{kind}.callgrind"
    for old in LOG_DIR.glob(f"{out.name}*"):
        old.unlink()
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, "-m", "bench.instructions", "--client", kind, address, str(calls),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as client:
        assert client.stdin is not None and client.stdout is not None
        client.stdout.readline()  # warmed up
        _control(client.pid, "--instr=on")
        client.stdin.write("go\n")
        client.stdin.flush()
        client.stdout.readline()  # the calls are done
        _control(client.pid, "--instr=off")
        _control(client.pid, "--dump")
        client.stdin.write("go\n")
        client.stdin.flush()
    dump = Path(f"{out}.1")
    totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
    return int(totals.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls counted per process")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)  # KIND ADDRESS CALLS
    args = parser.parse_args()
    if args.client:
        kind, address, count = args.client
        asyncio.run(_client(kind, address, int(count)))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind (apt-get install valgrind)")
    per_call: dict[str, int] = {}
    for mode in MODES:
        progress(f"instructions: {mode} under callgrind")
        per_call[mode] = _count(mode, args.calls) // args.calls
    client_per_call: dict[str, int] = {}
    instance, env, command = SERVERS[BARE]
    with diag_servers({instance: env}, {instance: command} if command else None) as (server,):
        for label, kind in CLIENT_MODES.items():
            progress(f"instructions: {label} under callgrind")
            client_per_call[label] = _count_client(kind, server.address, args.calls) // args.calls
    rows = [
        [mode, f"{count:,}", f"{count / per_call[BARE]:.2f}"] for mode, count in per_call.items()
    ]
    raw = client_per_call["raw grpc.aio channel"]
    client_rows = [
        [label, f"{count:,}", f"{count / raw:.2f}"] for label, count in client_per_call.items()
    ]
    print_table(
        f"Server instructions per call (callgrind): Echo 64 B, raw grpc.aio client,"
        f" concurrency {CONCURRENCY}, {args.calls:,} calls counted",
        ["server", "instructions/call", "vs bare"],
        rows,
        ["All threads of the server process; user space only (system calls are not counted)."],
    )
    print_table(
        "Client instructions per call (callgrind), to the bare server",
        ["client", "instructions/call", "vs raw"],
        client_rows,
        ["All threads of the client process; user space only."],
    )
    path = write_result(
        NAME,
        {"calls": args.calls, "concurrency": CONCURRENCY, "payload_bytes": 64},
        {"instructions_per_call": per_call, "client_instructions_per_call": client_per_call},
    )
    progress(f"instructions: wrote {path}")


if __name__ == "__main__":
    main()
