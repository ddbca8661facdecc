"""Syslog sinks against real sockets: UDP, a Unix datagram socket and TCP with octet counting."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.notify import Notification, Notifier, SyslogConfig, SyslogSink
from bastion.notify.syslog import format_line, octet_frame
from tests.bastion.notify.receivers import eventually, parse_rfc5424, read_octet_frame
from tests.bastion.notify.test_webhook import FAST, AuditLog, approved

AUTHPRIV, LOCAL3 = 10, 19
Collector = tuple[int, "asyncio.Queue[bytes]", list[int], list[int]]
WARNING, NOTICE = 4, 5


def notifier(config: SyslogConfig, node: str = "n1") -> Notifier:
    return Notifier([SyslogSink(config, node)], AuditLog(), retry_delays=FAST)


def check_line(line: bytes, facility: int, severity: int, event: str) -> dict[str, object]:
    fields = parse_rfc5424(line)
    assert int(fields["pri"]) == facility * 8 + severity
    assert fields["version"] == "1"
    assert fields["app"] == "bastion"
    assert fields["hostname"] == "n1"
    assert fields["msgid"] == event
    assert fields["procid"] == str(os.getpid())
    assert fields["sd"] == "-"
    message: dict[str, object] = json.loads(fields["msg"])
    assert message["event"] == event
    return message


async def test_udp_gets_an_rfc5424_line() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        port = rx.getsockname()[1]
        n = notifier(SyslogConfig(address=f"udp://127.0.0.1:{port}"))
        n.start()
        n.send(approved())
        line = await asyncio.wait_for(loop.sock_recv(rx, 65535), 20)
        await n.close()
    message = check_line(line, AUTHPRIV, NOTICE, "request.approved")
    assert message["request_id"] == 12 and message["decided_by"] == "bob"
    assert parse_rfc5424(line)["timestamp"] == "2023-11-14T22:13:20.500Z"


async def test_unix_datagram_socket_with_a_chosen_facility(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        rx.setblocking(False)
        n = notifier(SyslogConfig(address=str(path), facility="local3"))
        n.start()
        n.send(Notification("alert.mfa-failures", 0.0, "node", "alice", {"failures": 4}))
        line = await asyncio.wait_for(loop.sock_recv(rx, 65535), 20)
        await n.close()
    message = check_line(line, LOCAL3, WARNING, "alert.mfa-failures")
    assert message["subject"] == "alice" and message["details"] == {"failures": 4}


@pytest.fixture()
async def tcp_collector() -> AsyncIterator[Collector]:
    """A TCP syslog collector; it hangs up after the first frame of its first connection."""
    frames: asyncio.Queue[bytes] = asyncio.Queue()
    connections: list[int] = []
    hangups: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        first = connections == [1]
        try:
            while True:
                await frames.put(await read_octet_frame(reader))
                if first:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()
        await writer.wait_closed()
        hangups.append(connections[-1] if first else 0)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], frames, connections, hangups
    finally:
        server.close()


async def test_tcp_frames_are_octet_counted_and_a_dropped_connection_is_reopened(
    tcp_collector: Collector,
) -> None:
    port, frames, connections, hangups = tcp_collector
    n = notifier(SyslogConfig(address=f"tcp://127.0.0.1:{port}"))
    n.start()
    n.send(Notification("request.created", 0.0, "alice", "request #1", {"reason": "a\nb"}))
    first = await asyncio.wait_for(frames.get(), 20)
    message = check_line(first, AUTHPRIV, NOTICE, "request.created")
    assert message["reason"] == "a\nb"  # JSON-escaped: one frame, one record
    await eventually(lambda: hangups, "the collector to hang up")
    # The collector hung up after the first frame; the next line goes over a new connection.
    n.send(Notification("request.lapsed", 1.0, "node", "request #1"))
    second = await asyncio.wait_for(frames.get(), 20)
    check_line(second, AUTHPRIV, NOTICE, "request.lapsed")
    assert connections == [1, 2]
    n.send(Notification("request.dropped", 2.0, "alice", "request #1"))
    check_line(await asyncio.wait_for(frames.get(), 20), AUTHPRIV, NOTICE, "request.dropped")
    assert connections == [1, 2]  # kept open while the collector keeps it
    await n.close()


def test_header_fields_are_printable_ascii_and_bounded() -> None:
    long_event = "alert." + "x" * 40
    line = format_line(Notification(long_event, 0.0, "node", "ünïcode"), 10, "my node")
    fields = parse_rfc5424(line)
    assert fields["hostname"] == "my_node"
    assert fields["msgid"] == long_event[:32]
    assert json.loads(fields["msg"])["subject"] == "ünïcode"
    assert line.isascii()
    assert octet_frame(b"<85>1 x") == b"7 <85>1 x"
