"""Real receivers for the notification tests: an HTTP server, syslog sockets, a dead port.

Each one is the real thing on loopback (or a Unix socket in tmp_path): the sinks
under test talk to them exactly as they would to a production collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Received:
    """One HTTP request as the receiver saw it, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class HttpReceiver:
    """``http.server`` in a thread; answers the statuses in ``script`` first, then 200."""

    url: str
    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@contextlib.contextmanager
def http_receiver(script: list[int] | None = None) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(url="", script=list(script or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                status = receiver.script.pop(0) if receiver.script else 200
                receiver.requests.append(
                    Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, status
                    )
                )
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that takes connections into its backlog and never answers (a hung receiver).

    Closing it resets the waiting connections, so no client thread outlives the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


async def eventually(predicate: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """``predicate()``'s first truthy value, polled without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>1) (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) "
    r"(?P<procid>\S+) (?P<msgid>\S+) (?P<sd>-|(?:\[[^\]]*\])+) (?P<msg>.*)",
    re.S,
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")


def parse_rfc5424(line: bytes) -> dict[str, str]:
    """The fields of one RFC 5424 message; fails the test if it is not one."""
    text = line.decode("utf-8")
    m = RFC5424.fullmatch(text)
    assert m, f"not an RFC 5424 line: {text!r}"
    fields = m.groupdict()
    assert TIMESTAMP.fullmatch(fields["timestamp"]), fields["timestamp"]
    assert all(33 <= ord(c) <= 126 for c in fields["hostname"] + fields["msgid"])
    assert len(fields["msgid"]) <= 32 and len(fields["app"]) <= 48
    return fields


async def read_octet_frame(reader: asyncio.StreamReader) -> bytes:
    """One RFC 6587 octet-counted frame: ``LEN SP MSG``."""
    length = await reader.readuntil(b" ")
    assert length[:-1].isdigit() and not length.startswith(b"0"), length
    return await reader.readexactly(int(length[:-1]))
