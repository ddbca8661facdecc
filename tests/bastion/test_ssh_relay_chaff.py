"""The relay's connections send no CBC chaff (an empty SSH_MSG_IGNORE before every packet).

``drop_cbc_chaff`` is installed on both legs of every relayed session. The unit tests
pin what it lets through; the loopback tests run a real asyncssh client and server
and read asyncssh's own packet log, so an asyncssh upgrade that changes how the chaff
is sent shows up here (the control test fails once asyncssh stops sending it, and the
wrapper can then go).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import asyncssh
import pytest

from bastion.config import SshConfig
from bastion.ssh.upstream import UPSTREAM_CIPHERS, drop_cbc_chaff

MSG_IGNORE = 2
MSG_CHANNEL_DATA = 94
EMPTY = b"\0\0\0\0"


@dataclass
class FakeConnection:
    """Stands in for an asyncssh connection: records what reaches ``send_packet``."""

    sent: list[tuple[int, tuple[bytes, ...], object]] = field(default_factory=list)

    def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
        self.sent.append((pkttype, args, handler))


def test_only_the_empty_ignore_is_dropped() -> None:
    conn = FakeConnection()
    assert drop_cbc_chaff(conn, UPSTREAM_CIPHERS)  # type: ignore[arg-type]
    marker = object()
    conn.send_packet(MSG_IGNORE, EMPTY)
    conn.send_packet(MSG_CHANNEL_DATA, b"\0\0\0\1", b"\0\0\0\1x", handler=marker)
    conn.send_packet(MSG_IGNORE, b"\0\0\0\3abc")  # an IGNORE with content is not chaff
    assert conn.sent == [
        (MSG_CHANNEL_DATA, (b"\0\0\0\1", b"\0\0\0\1x"), marker),
        (MSG_IGNORE, (b"\0\0\0\3abc",), None),
    ]


def test_cbc_keeps_the_countermeasure() -> None:
    conn = FakeConnection()
    ciphers = (*SshConfig().ciphers, "aes256-cbc")
    assert not drop_cbc_chaff(conn, ciphers)  # type: ignore[arg-type]
    conn.send_packet(MSG_IGNORE, EMPTY)
    assert conn.sent == [(MSG_IGNORE, (EMPTY,), None)]


def test_unknown_cipher_list_keeps_the_countermeasure() -> None:
    """No list given: asyncssh's defaults apply, and they include CBC."""
    conn = FakeConnection()
    assert not drop_cbc_chaff(conn, ())  # type: ignore[arg-type]
    conn.send_packet(MSG_IGNORE, EMPTY)
    assert conn.sent == [(MSG_IGNORE, (EMPTY,), None)]


def test_default_ciphers_have_no_cbc() -> None:
    """The node installs the wrapper on both legs only because neither list has CBC."""
    assert not any("cbc" in c for c in (*SshConfig().ciphers, *UPSTREAM_CIPHERS))


# --- a real asyncssh pair on loopback --------------------------------------------------


class Echo(asyncssh.SSHServerSession[bytes]):
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.chan.write(data)

    def eof_received(self) -> bool:
        self.chan.exit(0)
        return False


class Server(asyncssh.SSHServer):
    def __init__(self, tweak: bool) -> None:
        self.tweak = tweak

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        if self.tweak:
            drop_cbc_chaff(conn, SshConfig().ciphers)

    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this is about packets, not logins

    def session_requested(self) -> Echo:
        return Echo()


@contextmanager
def packet_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """asyncssh logs every packet it sends at debug level 3."""
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            yield
    finally:
        asyncssh.set_debug_level(1)


@asynccontextmanager
async def echo_pair(tweak: bool) -> AsyncIterator[asyncssh.SSHClientConnection]:
    server = await asyncssh.create_server(
        lambda: Server(tweak),
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encoding=None,
        line_editor=False,
        encryption_algs=list(SshConfig().ciphers),
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="relay",
            known_hosts=None,
            config=None,
            client_keys=None,
            encoding=None,
            encryption_algs=UPSTREAM_CIPHERS,
        ) as conn:
            if tweak:
                drop_cbc_chaff(conn, UPSTREAM_CIPHERS)
            yield conn
    finally:
        server.close()
        await server.wait_closed()


async def keystrokes(conn: asyncssh.SSHClientConnection, n: int) -> None:
    writer, reader, _err = await conn.open_session(encoding=None)
    for i in range(n):
        byte = bytes([97 + i % 26])
        writer.write(byte)
        assert await reader.readexactly(1) == byte
    writer.write_eof()
    await writer.channel.wait_closed()


def sent_ignores(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        1
        for r in caplog.records
        if "Sent MSG_IGNORE" in r.getMessage() and r.name.startswith("asyncssh")
    )


async def test_relay_connections_send_no_chaff(caplog: pytest.LogCaptureFixture) -> None:
    with packet_log(caplog):
        async with echo_pair(tweak=True) as conn:
            caplog.clear()  # the handshake is not under test
            await keystrokes(conn, 20)
    data = [r for r in caplog.records if "MSG_CHANNEL_DATA" in r.getMessage()]
    assert len(data) >= 40  # both directions were logged
    assert sent_ignores(caplog) == 0


async def test_stock_asyncssh_sends_chaff(caplog: pytest.LogCaptureFixture) -> None:
    """Control: without the wrapper asyncssh sends one IGNORE per packet. If this fails
    after an asyncssh upgrade, the chaff is gone upstream and drop_cbc_chaff can go too."""
    with packet_log(caplog):
        async with echo_pair(tweak=False) as conn:
            caplog.clear()
            await keystrokes(conn, 20)
    assert sent_ignores(caplog) >= 40
