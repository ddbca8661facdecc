"""The cheapest PostgreSQL hop Python can make: a reference peer for bench/pg.py.

A byte-forwarding relay on uvloop that terminates TLS like the bastion (it
answers SSLRequest with ``S`` and upgrades with ``loop.start_tls``) and then
copies bytes both ways: no parsing, no tracking, no recording, no login of its
own (the client's SCRAM exchange goes through to PostgreSQL). Whatever TPS it
reaches is the ceiling for any Python relay with TLS on the machine, so the
benchmark can say how far the bastion is from that ceiling as well as from
pgbouncer.

Run by bench/pg.py::

    python bench/pg_floor_relay.py --listen PORT --upstream HOST:PORT --cert CRT --key KEY

It prints ``ready`` once listening and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import struct
from collections.abc import Coroutine
from typing import Any

import uvloop

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_TASKS: set[asyncio.Task[None]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.client.transport is not None
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, tls: ssl.SSLContext, upstream: tuple[str, int]) -> None:
        self.tls = tls
        self.upstream_addr = upstream
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.first = True
        self.held: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.first and data == SSL_REQUEST:
            self.first = False
            self.transport.write(b"S")
            self.transport.pause_reading()
            _spawn(self._start_tls())
            return
        self.first = False
        if self.upstream is None or self.upstream.transport is None:
            self.held.append(data)
            if len(self.held) == 1:
                _spawn(self._connect())
            return
        self.upstream.transport.write(data)

    async def _start_tls(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(self.transport, self, self.tls, server_side=True)
        self.transport = new

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(
            lambda: _Upstream(self), *self.upstream_addr
        )
        assert self.upstream.transport is not None
        for data in self.held:
            self.upstream.transport.write(data)
        self.held.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(port: int, upstream: tuple[str, int], tls: ssl.SSLContext) -> None:
    """Listen on 127.0.0.1:``port`` until SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(tls, upstream), "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    """Parse the arguments and run the relay."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="HOST:PORT of PostgreSQL")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    uvloop.run(serve(args.listen, (host, int(port)), tls))


if __name__ == "__main__":
    main()
