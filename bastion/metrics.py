"""Health and Prometheus metrics over a tiny HTTP endpoint.

``GET /healthz`` answers 200 while the node serves and can record, else 503 with
the reason (e.g. the recording storage is full: sessions are being refused);
``GET /metrics`` gives counters of audited events by action and gauges of live
sessions, connections still authenticating and recordings being written. It is a
read-only, plain-text endpoint meant for loopback or a monitoring network; it
reads at most one small request per connection with a deadline, so a slow or
hostile client costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_REQUEST = 8192
REQUEST_DEADLINE = 5.0


class Metrics:
    """Counters fed by the audit path; gauges read on demand."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}

    def count(self, action: str) -> None:
        """One audited event."""
        self.events[action] += 1

    def render(self) -> str:
        """Prometheus text exposition format."""
        lines = [
            "# HELP bastion_events_total Audited events by action.",
            "# TYPE bastion_events_total counter",
        ]
        for action, n in sorted(self.events.items()):
            label = action.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'bastion_events_total{{action="{label}"}} {n}')
        for name, read in sorted(self.gauges.items()):
            lines += [f"# TYPE bastion_{name} gauge", f"bastion_{name} {read():g}"]
        return "\n".join(lines) + "\n"


async def _respond(
    writer: asyncio.StreamWriter, status: str, body: str, content_type: str = "text/plain"
) -> None:
    data = body.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def start_metrics_server(
    metrics: Metrics, health: Callable[[], str | None], host: str, port: int
) -> asyncio.Server:
    """Serve /healthz and /metrics on ``host:port``; ``health`` says what is wrong, or None."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_DEADLINE)
            if len(head) > MAX_REQUEST:
                await _respond(writer, "431 Request Header Fields Too Large", "too large\n")
                return
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) != 3 or parts[0] != b"GET":
                await _respond(writer, "405 Method Not Allowed", "GET only\n")
            elif parts[1] == b"/metrics":
                await _respond(writer, "200 OK", metrics.render(), "text/plain; version=0.0.4")
            elif parts[1] == b"/healthz":
                problem = health()
                if problem is None:
                    await _respond(writer, "200 OK", "ok\n")
                else:
                    await _respond(writer, "503 Service Unavailable", f"unhealthy: {problem}\n")
            else:
                await _respond(writer, "404 Not Found", "try /metrics or /healthz\n")
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST)
