"""A TCP proxy on loopback that a test can cut or blackhole, to fail a real store.

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        ...
        proxy.cut()        # every open connection reset, new ones refused (a killed proxy)
        proxy.blackhole()  # connections accepted and kept, bytes never forwarded (a dead link)
        proxy.restore()    # forwarding again for new connections

Runs on the test's event loop, so it needs no thread and no process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct


class Mode(enum.Enum):
    FORWARD = "forward"
    BLACKHOLE = "blackhole"
    CUT = "cut"


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._mode = Mode.FORWARD
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Reset every connection now (RST, as a killed process's do) and refuse new ones."""
        self._mode = Mode.CUT
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def blackhole(self) -> None:
        """Stop forwarding: open connections go silent, new ones are accepted and ignored."""
        self._mode = Mode.BLACKHOLE

    def restore(self) -> None:
        self._mode = Mode.FORWARD

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode is Mode.CUT:
            _reset(writer)
            return
        self._writers.add(writer)
        if self._mode is Mode.BLACKHOLE:
            return  # kept open, never read: the client waits for an answer that never comes
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            _reset(writer)
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if self._mode is Mode.CUT:
                    return
                if self._mode is Mode.BLACKHOLE:
                    continue  # swallowed
                sink.write(data)
                await sink.drain()
        if self._mode is Mode.FORWARD:
            sink.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0: close sends RST, so the peer sees "connection reset", not a clean EOF.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
