"""Logins in progress on both listeners: the total cap, the per-source cap, and
connections that close at every stage of a PostgreSQL login.

A real node, raw sockets bound to distinct loopback addresses (127.0.0.0/8 is all
local on Linux) for the floods, and stock ssh and psycopg from 127.0.0.1 for the
real logins that must get through.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from bastion.pg.encoding import encode
from bastion.pg.messages import PasswordMessage, SSLRequest, StartupMessage
from bastion.startups import StartupLimits, source_of
from tests.peers.bastion_node import make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

PER_SOURCE = 4
TOTAL = 12


# --- the counting itself ----------------------------------------------------------------


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert (
        source_of("2001:db8:1:2:aa::1") == source_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    )
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("?") == "?"


def test_slots_cap_per_source_and_in_total_and_release_once() -> None:
    limits = StartupLimits(max_total=3, per_source=2)
    a1, a2 = limits.admit("10.0.0.1"), limits.admit("10.0.0.1")
    assert "per_source_max_startups" in str(limits.admit("10.0.0.1"))
    b1 = limits.admit("10.0.0.2")
    assert "max_startups" in str(limits.admit("10.0.0.3"))
    for slot in (a1, a2, b1):
        assert not isinstance(slot, str)
        slot.release()
        slot.release()  # a second release (login done, then gone) frees nothing more
    assert limits.in_progress == 0 and limits.from_source("10.0.0.1") == 0


# --- a real node --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[PgTargets]:
    harness = make_harness(
        Path(tmp_path_factory.mktemp("startups")),
        overrides={
            "max_startups = 100": f"max_startups = {TOTAL}",
            "per_source_max_startups = 10": f"per_source_max_startups = {PER_SOURCE}",
        },
    )
    try:
        yield PgTargets.create(harness, pg_server)
    finally:
        harness.close()


def _from(source: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _refused_53300(s: socket.socket) -> bool:
    """The node answered a client's login (TLS, then the startup message) with the
    'too many logins' FATAL and closed: where libpq shows a server's error."""
    s.sendall(encode(SSLRequest()))
    assert s.recv(1) == b"S"
    reply = b""
    with _tls().wrap_socket(s) as tls:  # takes the socket over: closed here
        tls.sendall(encode(StartupMessage({"user": "nobody", "database": "pg1"})))
        while chunk := tls.recv(4096):
            reply += chunk
    return reply[:1] == b"E" and b"C53300\x00" in reply


# The stages a PostgreSQL client can close at; each returns with the socket closed.


def _at_once(s: socket.socket) -> None:
    s.close()


def _reset_at_once(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _after_ssl_request(s: socket.socket) -> None:
    s.sendall(encode(SSLRequest()))
    assert s.recv(1) == b"S"
    s.close()


def _mid_tls(s: socket.socket) -> None:
    s.sendall(encode(SSLRequest()))
    assert s.recv(1) == b"S"
    outgoing = ssl.MemoryBIO()
    tls = _tls().wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    s.sendall(outgoing.read())  # the ClientHello; the server's reply is never read
    s.recv(1)
    s.close()


def _cancel_request(s: socket.socket) -> None:
    s.sendall(struct.pack("!iiii", 16, 80877102, 1, 2))
    s.close()


def _gssenc_refused(s: socket.socket) -> None:
    s.sendall(struct.pack("!ii", 8, 80877104))
    assert s.recv(1) == b"N"
    s.close()


def _startup(s: socket.socket) -> ssl.SSLSocket:
    s.sendall(encode(SSLRequest()))
    assert s.recv(1) == b"S"
    tls = _tls().wrap_socket(s)
    tls.sendall(encode(StartupMessage({"user": "nobody", "database": "pg1"})))
    assert tls.recv(9)[:1] == b"R"  # AuthenticationCleartextPassword
    return tls


def _after_startup(s: socket.socket) -> None:
    _startup(s).close()


def _during_password(s: socket.socket) -> None:
    tls = _startup(s)
    tls.sendall(encode(PasswordMessage("not-a-token")))
    tls.close()  # before the node has answered


def _after_wrong_password(s: socket.socket) -> None:
    tls = _startup(s)
    tls.sendall(encode(PasswordMessage("not-a-token")))
    assert b"C28P01" in tls.recv(4096)
    tls.close()


STAGES: list[Callable[[socket.socket], None]] = [
    _at_once,
    _reset_at_once,
    _after_ssl_request,
    _mid_tls,
    _cancel_request,
    _gssenc_refused,
    _after_startup,
    _during_password,
    _after_wrong_password,
]


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("stage", STAGES, ids=[f.__name__.strip("_") for f in STAGES])
def test_pg_cap_holds_after_a_connection_closes_at_any_stage(
    node: PgTargets, stage: Callable[[socket.socket], None]
) -> None:
    """The count of PostgreSQL logins in progress comes back to where it was after a
    client leaves at ``stage``, never below, and the caps still refuse the next one."""
    h = node.harness
    before = h.gauge("pg_logins_in_progress")
    for _ in range(3):
        stage(_from("127.0.0.3", h.pg_port))
    wait_until(
        lambda: h.gauge("pg_logins_in_progress") == before,
        15,
        f"the login slots of connections closed at {stage.__name__} to be released",
    )
    # per source: PER_SOURCE idle connections from one address, the next is refused
    held = [_from("127.0.0.3", h.pg_port) for _ in range(PER_SOURCE)]
    try:
        wait_until(lambda: h.gauge("pg_logins_in_progress") == before + PER_SOURCE, 10, "count")
        with _from("127.0.0.3", h.pg_port) as extra:
            assert _refused_53300(extra)
        # in total: fill max_startups from other addresses, the next source is refused
        for i in range(TOTAL - PER_SOURCE - int(before)):
            held.append(_from(f"127.0.1.{i // PER_SOURCE + 1}", h.pg_port))
        wait_until(lambda: h.gauge("pg_logins_in_progress") == TOTAL, 10, "the total to fill")
        with _from("127.0.0.4", h.pg_port) as extra:
            assert _refused_53300(extra)
    finally:
        for s in held:
            s.close()
    wait_until(lambda: h.gauge("pg_logins_in_progress") == before, 15, "the slots to be freed")


# --- one address flooding both listeners ----------------------------------------------------


class Flood:
    """Idle connections from one address, reopened as the node closes or refuses them."""

    def __init__(self, source: str, ports: list[int], width: int) -> None:
        self.source, self.ports, self.width = source, ports, width
        self.stop = threading.Event()
        self.opened = 0
        self.threads = [
            threading.Thread(target=self._hold, args=(port,), daemon=True)
            for port in ports
            for _ in range(width)
        ]

    def _hold(self, port: int) -> None:
        while not self.stop.is_set():
            try:
                s = _from(self.source, port)
            except OSError:
                continue
            self.opened += 1
            s.settimeout(0.5)
            with s:
                while not self.stop.is_set():
                    try:
                        if not s.recv(4096):
                            break  # refused or timed out by the node: open another
                    except TimeoutError:
                        continue
                    except OSError:
                        break

    def __enter__(self) -> Flood:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_one_address_flooding_both_ports_does_not_lock_out_real_logins(
    node: PgTargets,
) -> None:
    """100 idle connections per port from 127.0.0.2, reopened as they are dropped, used
    to fill the shared pre-authentication limit on both ports (0 of 12 real logins in
    75 s). Each source now holds at most per_source_max_startups; real ssh and
    PostgreSQL logins from 127.0.0.1 succeed throughout."""
    h = node.harness
    who = h.contractor("flood")
    h.grant(who, "web1")
    node.grant(who, "pg1", "readwrite")
    token = node.token(who)
    with Flood("127.0.0.2", [h.port, h.pg_port], width=100) as flood:
        wait_until(lambda: flood.opened >= 200, 30, "the flood to open 200 connections")
        wait_until(
            lambda: (
                h.gauge("unauthenticated_connections") >= PER_SOURCE
                and h.gauge("pg_logins_in_progress") >= PER_SOURCE
            ),
            15,
            "the flooding address to hold its share on both ports",
        )
        for i in range(3):
            r = who.ssh(f"echo real-{i}", target="web1")
            assert r.returncode == 0 and r.stdout == f"real-{i}\n".encode(), r.stderr
            with psycopg.connect(**node.conninfo(who, password=token)) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert h.gauge("unauthenticated_connections") <= TOTAL
            assert h.gauge("pg_logins_in_progress") <= PER_SOURCE + 1
    assert "per_source_max_startups" in h.log()


# --- what a refused or stalled client sees ------------------------------------------------


def _fill_source(h_port: int, source: str) -> list[socket.socket]:
    return [_from(source, h_port) for _ in range(PER_SOURCE)]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_psql_refused_at_capacity_shows_the_reason(node: PgTargets) -> None:
    """At capacity psql prints the node's FATAL (TLS is finished first), not libpq's
    "server sent an error response during SSL exchange"."""
    h = node.harness
    who = h.contractor("full")
    node.grant(who, "pg1", "readwrite")
    token = node.token(who)
    before = h.gauge("pg_logins_in_progress")
    held = _fill_source(h.pg_port, "127.0.0.1")  # psql connects from 127.0.0.1 too
    try:
        wait_until(
            lambda: h.gauge("pg_logins_in_progress") == before + PER_SOURCE,
            10,
            "127.0.0.1 to hold its per-source share",
        )
        r = node.psql(who, token, "SELECT 1;")
    finally:
        for s in held:
            s.close()
    assert r.returncode == 2, r
    assert "FATAL:  bastion: too many connections are logging in; retry" in r.stderr, r.stderr
    assert "SSL exchange" not in r.stderr
    wait_until(lambda: h.gauge("pg_logins_in_progress") == before, 15, "the slots to be freed")


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sent", ["nothing", "half a ClientHello", "a ClientHello"])
def test_client_stalled_inside_tls_is_closed_at_the_login_timeout(
    node: PgTargets, sent: str
) -> None:
    """After the node's "S": silence, or part or all of a ClientHello and then silence.
    The node closes at [postgres] login_timeout (5 s here), not at asyncio's 60 s TLS
    handshake timeout, and frees the login slot."""
    h = node.harness
    before = h.gauge("pg_logins_in_progress")
    login_timeout = h.config.postgres.login_timeout
    s = _from("127.0.0.5", h.pg_port)
    with s:
        s.sendall(encode(SSLRequest()))
        assert s.recv(1) == b"S"
        outgoing = ssl.MemoryBIO()
        tls = _tls().wrap_bio(ssl.MemoryBIO(), outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        cut = {"nothing": 0, "half a ClientHello": len(hello) // 2}.get(sent, len(hello))
        s.sendall(hello[:cut])  # the handshake is never finished
        wait_until(lambda: h.gauge("pg_logins_in_progress") == before + 1, 10, "the login to count")
        s.settimeout(login_timeout * 3)  # far below the 60 s a TLS-level timeout would take
        try:
            while s.recv(4096):  # the server's handshake reply, then the close
                pass
        except ConnectionResetError:
            pass
    wait_until(lambda: h.gauge("pg_logins_in_progress") == before, 10, "the slot to be freed")
