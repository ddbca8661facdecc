"""One console, any node: two real nodes on one PostgreSQL state (issue 16, part 2).

Node A's admin lists B's sessions, watches one live through A (A relays from B's
control listener), and ends them from A. Both nodes poll the time box only every
``POLL`` seconds, far beyond any wait below, so a session that ends promptly was
ended by the NOTIFY wake-up, not by the poll. A CancelRequest for a query on B
that a balancer sends to A is forwarded to B; a forged one does nothing.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pexpect
import psycopg
import pytest

from bastion.control.client import ControlClient
from bastion.control.messages import ControlError, LiveEnd, LiveEvent, LiveOutput, Snapshot
from bastion.pg.encoding import encode
from bastion.pg.messages import CancelRequest
from bastion.store.models import Role, SessionRecord, TokenPurpose
from tests.peers.bastion_node import BastionHarness, Contractor
from tests.peers.fleet import CancelSplitter, Fleet, start_fleet
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

POLL = 600.0
"""The nodes' [timebox] poll_interval: no pass of the poll falls inside a test's waits."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Fleet]:
    name = pg_server.create_database()
    f = start_fleet(tmp_path_factory.mktemp("fleet"), pg_server.dsn(name), POLL)
    try:
        yield f
    finally:
        f.close()
        pg_server.drop_database(name)


def _on_b(f: Fleet, who: Contractor) -> Contractor:
    """The same contractor, connecting through node B."""
    return replace(who, harness=f.b)


def _live_on(f: Fleet, who: Contractor, node: str) -> SessionRecord:
    found = wait_until(
        lambda: [s for s in f.a.store.list_sessions(live=True, user=who.name) if s.node == node],
        15,
        f"{who.name}'s live session on {node}",
    )
    return found[0]


async def _collect(client: ControlClient, sid: str, got: list[LiveEvent]) -> None:
    async for event in client.watch(sid):
        got.append(event)


def test_admin_on_a_lists_watches_and_terminates_a_session_on_b(fleet: Fleet) -> None:
    a = fleet.a
    admin = a.contractor("adm", Role.ADMIN)
    c, d = a.contractor(), a.contractor()
    a.grant(c, "web1")
    a.grant(d, "web1")
    child = _on_b(fleet, c).ssh_pty("web1")
    received = io.BytesIO()
    child.logfile_read = received
    on_a = d.ssh_pty("web1")  # a session on A too, for the listing
    try:
        child.sendline("echo ready-$((1+1))")
        child.expect("ready-2")
        on_a.sendline("echo ready-$((2+2))")
        on_a.expect("ready-4")
        sid = _live_on(fleet, c, "fleet-b").id
        sid_a = _live_on(fleet, d, "fleet-a").id

        # 1. Listing: the CLI and the control API of A show both nodes' sessions.
        r = a.cli("sessions", "list", "--live")
        assert r.returncode == 0, r.stderr
        lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
        assert "fleet-b" in lines[sid] and "fleet-a" in lines[sid_a]
        r = a.cli("sessions", "list", "--live", "--node", "fleet-b")
        assert sid in r.stdout and sid_a not in r.stdout

        async def console() -> list[LiveEvent]:
            got: list[LiveEvent] = []
            sock = a.control_socket()
            async with await ControlClient.connect(sock, user=admin.name) as client:
                assert client.node == "fleet-a"
                listed = {s.id: s for s in await client.list_sessions(live=True)}
                assert listed[sid].node == "fleet-b" and listed[sid].live
                assert listed[sid_a].node == "fleet-a"
                only_b = await client.list_sessions(live=True, node="fleet-b")
                assert [s.id for s in only_b] == [sid]
                # 2. Watch B's session through A: the screen, then live output.
                watch = asyncio.create_task(_collect(client, sid, got))
                await asyncio.to_thread(
                    wait_until, lambda: got, 20, "the snapshot relayed from B"
                )
                child.sendline("echo relayed-$((6*7))")
                await asyncio.to_thread(child.expect, "relayed-42")
                await asyncio.to_thread(
                    wait_until,
                    lambda: b"relayed-42"
                    in b"".join(e.data for e in got if isinstance(e, LiveOutput)),
                    20,
                    "the live output relayed from B",
                )
                # 3. Terminate from A: B hears it by NOTIFY (its poll is POLL s away).
                await client.terminate(sid, "fleet drill")
                await asyncio.to_thread(
                    child.expect, f"terminated by {admin.name}: fleet drill", 20
                )
                await asyncio.wait_for(watch, 20)
            return got

        got = asyncio.run(console())
        child.expect(pexpect.EOF, 20)
    finally:
        child.close()
        on_a.close()
    assert isinstance(got[0], Snapshot) and got[0].session_id == sid
    assert isinstance(got[-1], LiveEnd) and got[-1].reason == "admin-terminated"
    live = b"".join(e.data for e in got if isinstance(e, LiveOutput))
    assert got[0].screen_bytes + live in received.getvalue()
    # B served the watch and audited it under the admin's name; the relay's token is spent.
    (watched,) = a.audit(admin.name, "control.watch")
    assert watched.subject == sid and watched.details["node"] == "fleet-b"
    tokens = [t for t in a.store.list_tokens(user=admin.name) if t.purpose == TokenPurpose.CONTROL]
    assert tokens and all(t.revoked_at is not None for t in tokens)
    a.wait_audit(c.name, "session.end")
    (ended,) = a.store.list_sessions(user=c.name)
    assert ended.end_reason == "admin-terminated" and ended.node == "fleet-b"


def test_revocation_and_lock_from_a_reach_b_without_the_poll(fleet: Fleet) -> None:
    a = fleet.a
    c, d = a.contractor(), a.contractor()
    g = a.grant(c, "web1")
    a.grant(d, "web2")
    revoked = _on_b(fleet, c).ssh_pty("web1")
    locked = _on_b(fleet, d).ssh_pty("web2")
    try:
        for child in (revoked, locked):
            child.sendline("echo up-$((3+4))")
            child.expect("up-7")
        _live_on(fleet, c, "fleet-b")
        _live_on(fleet, d, "fleet-b")
        assert a.cli("grant", "revoke", str(g.id)).returncode == 0
        revoked.expect(f"grant #{g.id} was revoked", 20)
        r = a.cli("user", "lock", d.name)
        assert r.returncode == 0, r.stderr
        locked.expect(f"user {d.name} locked", 20)
        for child in (revoked, locked):
            child.expect(pexpect.EOF, 20)
    finally:
        revoked.close()
        locked.close()


def test_watch_through_a_node_without_a_control_listener_says_so(fleet: Fleet) -> None:
    """A registry row naming only a Unix socket: the relay refuses with the fix."""
    from bastion.control.relay import peer_address

    row = replace(fleet.b.store.get_node("fleet-b"), control_addr="unix:/run/b.sock")
    with pytest.raises(ControlError, match=r"set \[control\] listen on fleet-b"):
        peer_address(row)


# --- PostgreSQL cancel across nodes ------------------------------------------------------


def _active(server: PgServer, marker: str) -> bool:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
            [f"%{marker}%"],
        ).fetchone()
    return bool(row and row[0])


def _raw_cancel(port: int, pid: int, secret: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode(CancelRequest(pid, secret)))
        s.recv(1)  # the node closes when done


def _log_count(h: BastionHarness, text: str) -> int:
    return h.log().count(text)


def test_a_cancel_sent_to_a_cancels_the_query_on_b(fleet: Fleet, pg_server: PgServer) -> None:
    a, b = fleet.a, fleet.b
    pg = PgTargets.create(a, pg_server)
    who = a.contractor()
    pg.grant(who)
    token = pg.token(who)
    splitter = CancelSplitter(first=b.pg_port, then=a.pg_port)
    try:
        info = {**pg.conninfo(who), "port": splitter.port, "password": token}
        info["connect_timeout"] = 30  # TLS and a login through the splitter, on a loaded machine
        with psycopg.connect(**info) as conn:
            pid = conn.info.backend_pid
            owner = a.store.cancel_key_node(pid)
            assert owner == "fleet-b"
            # A forged key (right pid, wrong secret) through A: forwarded, refused by B.
            marker = f"m{secrets.token_hex(4)}"
            result: list[object] = []
            worker = threading.Thread(
                target=lambda: result.append(
                    conn.execute(f"SELECT pg_sleep(4), '{marker}'").fetchone()
                )
            )
            forwarded = _log_count(a, "forwarded to node fleet-b")
            unknown = _log_count(b, "cancel request with an unknown key")
            worker.start()
            wait_until(lambda: _active(pg_server, marker), 15, "the query on the target")
            _raw_cancel(a.pg_port, pid, b"\0\0\0\0")
            wait_until(
                lambda: _log_count(b, "cancel request with an unknown key") > unknown,
                15,
                "B refusing the forged key",
            )
            assert _log_count(a, "forwarded to node fleet-b") == forwarded + 1
            assert _active(pg_server, marker)  # still running after B refused
            worker.join(30)
            assert result and result[0] == ("", marker)
            # A key nobody issued, sent to A: not forwarded anywhere.
            _raw_cancel(a.pg_port, 2**31 - 1 if pid != 2**31 - 1 else 1, b"\1\2\3\4")
            wait_until(
                lambda: _log_count(a, "cancel request with an unknown key") >= 1,
                15,
                "A dropping an unknown key",
            )
            assert _log_count(a, "forwarded to node fleet-b") == forwarded + 1
            # The real cancel, which libpq sends to the address it connected to:
            # the splitter hands that connection to A, which forwards it to B.
            timer = threading.Timer(1.0, conn.cancel)
            timer.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(60)")
            timer.join()
            assert splitter.accepted >= 2  # the cancel went through A
            conn.rollback()
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert a.wait_audit(who.name, "pg.cancel")
        assert _log_count(a, "forwarded to node fleet-b") == forwarded + 2
        wait_until(lambda: a.store.cancel_key_node(pid) is None, 15, "the key released")
    finally:
        splitter.close()
