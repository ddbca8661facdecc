"""The PROXY-protocol front of a listener, on real loopback sockets, and its settings.

The end-to-end cases (HAProxy, two nodes, ssh and psql) are in test_proxy_haproxy.py;
here: the one place the client address is resolved, the trusted-proxy check, the
hand-over (bytes after the header reach the listener's protocol intact, in the same
segment or later), the login-timeout refusal, and the config errors.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

import pytest

from bastion.config import load_config, render_config
from bastion.errors import ConfigError
from bastion.proxied import TrustedProxies, accepting, client_address
from bastion.proxy_protocol import Address, encode_v1, encode_v2


class Echo(asyncio.Protocol):
    """The listener's own protocol: tells who it thinks the client is, then echoes."""

    def __init__(self) -> None:
        self.forwarded_peer: Address | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _, shown = client_address(transport.get_extra_info("peername"), self.forwarded_peer)
        transport.write(f"you are {shown}\n".encode())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def _serve(trusted: list[str], timeout: float = 5) -> asyncio.Server:
    factory = accepting(
        Echo,
        proxy_protocol=True,
        trusted=[ipaddress.ip_network(t) for t in trusted],
        timeout=timeout,
        listener="test",
    )
    return await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)


async def _exchange(server: asyncio.Server, *parts: bytes) -> bytes:
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0)
        if parts:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "header",
    [
        encode_v2(("203.0.113.9", 50123), ("10.0.0.1", 2222)),
        encode_v1(("2001:db8::7", 443), ("2001:db8::1", 2222)),
    ],
)
async def test_forwarded_address_and_bytes_after_the_header(header: bytes) -> None:
    server = await _serve(["127.0.0.0/8"])
    async with server:
        # header and payload in one segment, and the header split over several
        together = await _exchange(server, header + b"SSH-2.0-x\r\n")
        split = await _exchange(server, header[:5], header[5:-1], header[-1:], b"hello")
    who = "203.0.113.9:50123" if b"203.0.113.9" in together else "2001:db8::7:443"
    assert together == f"you are {who}\n".encode() + b"SSH-2.0-x\r\n"
    assert split == f"you are {who}\n".encode() + b"hello"


async def test_local_header_means_the_socket_peer() -> None:
    """v2 LOCAL (a balancer's health check): the balancer itself is the client."""
    server = await _serve(["127.0.0.1"])
    async with server:
        out = await _exchange(server, encode_v2(None, None, local=True) + b"ping")
    assert out.startswith(b"you are 127.0.0.1:") and out.endswith(b"\nping")


async def test_untrusted_peer_is_closed_unread(caplog: pytest.LogCaptureFixture) -> None:
    server = await _serve(["192.0.2.0/24"])
    with caplog.at_level(logging.WARNING, "bastion.proxied"):
        async with server:
            out = await _exchange(server)  # closed before it could send its header
    assert out == b""
    assert "127.0.0.1 is not in test.trusted_proxies" in caplog.text
    assert "(untrusted-proxy)" in caplog.text


async def test_silent_connection_is_closed_at_the_login_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await _serve(["127.0.0.1/32"], timeout=0.2)
    port = server.sockets[0].getsockname()[1]
    with caplog.at_level(logging.WARNING, "bastion.proxied"):
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PROXY TCP4 1.2.3.4")
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            await writer.wait_closed()
    assert "no complete PROXY header within 0.2 s (18 bytes received" in caplog.text
    assert "(truncated)" in caplog.text


def test_trusted_proxies_match_blocks_and_mapped_addresses() -> None:
    trusted = TrustedProxies(
        [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64")]
    )
    assert trusted.trusts("10.0.0.9")
    assert trusted.trusts("::ffff:10.0.0.9")  # a dual-stack socket's view of an IPv4 peer
    assert trusted.trusts("fd00::5")
    assert not trusted.trusts("10.0.1.9")
    assert not trusted.trusts("?")


def test_client_address_prefers_what_the_balancer_forwarded() -> None:
    assert client_address(("127.0.0.1", 5), ("198.51.100.1", 7)) == (
        "198.51.100.1",
        "198.51.100.1:7",
    )
    assert client_address(("127.0.0.1", 5), None) == ("127.0.0.1", "127.0.0.1:5")
    assert client_address(None, None) == ("?", "?")


def _config(tmp_path: Path, ssh_lines: str) -> Path:
    path = tmp_path / "bastion.toml"
    text = render_config("n1", "127.0.0.1:2299")
    old = "proxy_protocol = false\ntrusted_proxies = []\n"
    path.write_text(text.replace(old, ssh_lines, 1))
    return path


def test_config(tmp_path: Path) -> None:
    cfg = load_config(
        _config(tmp_path, 'proxy_protocol = true\ntrusted_proxies = ["10.0.0.5", "fd00::/64"]\n')
    )
    assert cfg.ssh.proxy_protocol and not cfg.postgres.proxy_protocol
    assert [str(n) for n in cfg.ssh.trusted_proxies] == ["10.0.0.5/32", "fd00::/64"]
    with pytest.raises(
        ConfigError, match=r"ssh.proxy_protocol is on but ssh.trusted_proxies is empty"
    ):
        load_config(_config(tmp_path, "proxy_protocol = true\ntrusted_proxies = []\n"))
    with pytest.raises(ConfigError, match=r"ssh.trusted_proxies: 'haproxy' is not an address"):
        load_config(_config(tmp_path, 'proxy_protocol = true\ntrusted_proxies = ["haproxy"]\n'))
    with pytest.raises(ConfigError, match=r"ssh.proxy_protocol must be true or false"):
        load_config(_config(tmp_path, 'proxy_protocol = "yes"\n'))


async def test_health_check_connect_and_close_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HAProxy's ``check`` connects and closes every few seconds: no warning each time,
    while a header cut short is one."""
    server = await _serve(["127.0.0.1/32"])
    with caplog.at_level(logging.DEBUG, "bastion.proxied"):
        async with server:
            assert await _exchange(server, b"") == b""
            assert await _exchange(server, b"PROXY TCP4 1.2") == b""
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "closed after 14 bytes" in warnings[0], warnings
    assert "connected and closed without sending anything" in caplog.text
