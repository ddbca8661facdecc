"""Hostile clients at the SSH listener: idle floods, garbage, huge lengths, slow logins."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.bastion_node import BastionHarness, make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def strict_bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionHarness]:
    harness = make_harness(
        Path(tmp_path_factory.mktemp("hostile")),
        overrides={
            "max_startups = 100": "max_startups = 4",
            "login_grace = 30": "login_grace = 2",
        },
    )
    try:
        yield harness
    finally:
        harness.close()


def _connect(b: BastionHarness) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the server closes the connection within ``seconds`` (reading what it sends)."""
    s.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def _still_serves(b: BastionHarness) -> None:
    c = b.contractor()
    b.grant(c, "web1")
    r = c.ssh("echo alive", target="web1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"alive\n"


def test_idle_connection_flood_is_bounded(strict_bastion: BastionHarness) -> None:
    b = strict_bastion
    before = b.gauge("unauthenticated_connections")
    idle = [_connect(b) for _ in range(4)]
    try:
        wait_until(
            lambda: b.gauge("unauthenticated_connections") >= 4,
            10,
            "the node to count the 4 idle connections (max_startups = 4)",
        )
        with _connect(b) as extra:
            assert _closed_within(extra, 3), "a 5th unauthenticated connection was kept"
    finally:
        for s in idle:
            s.close()
    wait_until(
        lambda: b.gauge("unauthenticated_connections") <= before,
        10,
        "the node to free the closed connections' slots",
    )
    _still_serves(b)


def test_slow_login_is_cut_at_login_timeout(strict_bastion: BastionHarness) -> None:
    s = _connect(strict_bastion)
    try:
        s.sendall(b"SSH-2.0-slowloris\r\n")
        assert _closed_within(s, 8), "idle pre-auth connection outlived login_timeout"
    finally:
        s.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SSH-2.0-x\r\n" + struct.pack(">I", 0xFFFFFFF0) + b"\x00" * 16,
        b"SSH-2.0-x\r\n" + b"\x00\x00\x00\x0c\x0a\x14" + b"\xff" * 200,
        b"\x00" * 70000,
    ],
    ids=["http", "huge-length", "garbage-kexinit", "zeros"],
)
def test_garbage_is_dropped_and_node_survives(
    strict_bastion: BastionHarness, payload: bytes
) -> None:
    s = _connect(strict_bastion)
    try:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _closed_within(s, 5)
    finally:
        s.close()
    assert strict_bastion.proc is not None and strict_bastion.proc.poll() is None
    _still_serves(strict_bastion)
