"""A blocking TCP relay that records real PostgreSQL traffic, and its analysis.

``Relay`` listens on 127.0.0.1, connects each client to the real server and
copies bytes both ways, appending every chunk to the connection's transcript
*before* forwarding it; so a reply is always recorded after what caused it and
replaying the transcript in order gives each parser the context it would have
had inside a proxy. ``analyse`` replays a transcript through FrontendParser,
BackendParser and QueryTracker, telling each parser what the other side sent.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from bastion.pg.protocol import CLOSED, BackendParser, FrontendParser
from bastion.pg.tracker import QueryRecord, QueryTracker

TIMEOUT = 30.0


class Connection:
    """One relayed client connection: the recorded chunks, in causal order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []  # ("F" client->server | "B", data); b"" = EOF
        self._lock = threading.Lock()
        self._open = 2
        self.closed = threading.Event()

    def record(self, direction: str, data: bytes) -> None:
        with self._lock:
            self.chunks.append((direction, data))
            if not data:
                self._open -= 1
                if self._open == 0:
                    self.closed.set()

    def wait_closed(self) -> list[tuple[str, bytes]]:
        assert self.closed.wait(TIMEOUT), "relayed connection did not close"
        return list(self.chunks)


class Relay:
    """Forwards 127.0.0.1:``port`` to ``(host, port)`` and records every connection."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # so the accept loop notices close()
        self._stopping = threading.Event()
        self.port: int = self._listener.getsockname()[1]
        self.connections: list[Connection] = []
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self._target, timeout=TIMEOUT)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            conn = Connection()
            self.connections.append(conn)
            self._start(self._pump, conn, client, upstream, "F")
            self._start(self._pump, conn, upstream, client, "B")

    @staticmethod
    def _pump(conn: Connection, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while data := src.recv(65536):
                conn.record(direction, data)  # recorded before the peer can react to it
                dst.sendall(data)
        except OSError:
            pass
        conn.record(direction, b"")
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def dsn(self, dbname: str, user: str = "postgres", password: str = "", **params: str) -> str:
        auth = f"{user}:{password}" if password else user
        query = "&".join(f"{k}={v}" for k, v in {"sslmode": "disable", **params}.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}?{query}"

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv()
            sock.close()
        for thread in self._threads:
            thread.join(TIMEOUT)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Analysis:
    """What the protocol core made of one recorded connection."""

    frontend: list[Any] = field(default_factory=list)
    backend: list[Any] = field(default_factory=list)
    records: list[QueryRecord] = field(default_factory=list)
    frontend_parser: FrontendParser = field(default_factory=FrontendParser)
    backend_parser: BackendParser = field(default_factory=BackendParser)
    unmatched: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def of(self, cls: type[Any], side: str = "") -> list[Any]:
        """Every message of a class (from one side: "F" or "B", or both)."""
        pool = {"F": self.frontend, "B": self.backend}.get(side, self.frontend + self.backend)
        return [x for x in pool if isinstance(x, cls)]

    def record(self, sql: str) -> QueryRecord:
        """The only record of ``sql``."""
        found = [r for r in self.records if r.sql == sql]
        assert len(found) == 1, (sql, self.records)
        return found[0]


def analyse(chunks: list[tuple[str, bytes]]) -> Analysis:
    """Replay a transcript; assert every byte of both directions parses."""
    ticks = itertools.count()
    tracker = QueryTracker(clock=lambda: float(next(ticks)))
    out = Analysis()
    fp, bp = out.frontend_parser, out.backend_parser

    def drain() -> None:
        progress = True
        while progress:
            progress = False
            for sent in fp.events():
                bp.frontend_sent(sent)
                tracker.frontend(sent)
                out.frontend.append(sent)
                progress = True
            for answer in bp.events():
                fp.backend_sent(answer)
                out.records.extend(tracker.backend(answer))
                out.backend.append(answer)
                progress = True

    for direction, data in chunks:
        if direction == "F":
            out.bytes_in += len(data)
            fp.receive_data(data)
        else:
            out.bytes_out += len(data)
            bp.receive_data(data)
        drain()
    assert fp.next_event() is CLOSED, "client bytes left unparsed"
    assert bp.next_event() is CLOSED, "server bytes left unparsed"
    out.records.extend(tracker.close())
    out.unmatched = tracker.unmatched
    return out
