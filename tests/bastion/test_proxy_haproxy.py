"""Two nodes sharing PostgreSQL state behind a real HAProxy speaking PROXY v2.

Contractors connect with stock ``ssh`` (bound to 127.0.0.2) and ``psql`` (over
IPv6 ``::1``), so the address HAProxy sees differs from the 127.0.0.1 it uses
towards the nodes; session rows and audit rows must carry the contractor's
address, not HAProxy's. A connection from an untrusted address, a truncated
header and a v2 header with a bad signature are each refused and logged, and
the node goes on serving.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.openssh_target import free_port
from bastion.proxy_protocol import V2_SIGNATURE, encode_v2
from bastion.store.models import SessionRecord
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.haproxy import HAProxy, start_haproxy
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

PROXY_ON = {
    "proxy_protocol = false\ntrusted_proxies = []": (
        'proxy_protocol = true\ntrusted_proxies = ["127.0.0.1/32", "::1/128"]'
    )
}
CONTRACTOR_ADDRESS = "127.0.0.2"
"""Where ssh connects from (``-b``): loopback, but not HAProxy's own 127.0.0.1."""


@dataclass
class Fleet:
    """Nodes a and b on one PostgreSQL state, HAProxy in front, pg1 and pg2 behind."""

    a: BastionHarness
    b: BastionHarness
    haproxy: HAProxy
    pg: PgTargets

    def ssh(
        self, who: Contractor, *remote: str, source: str = CONTRACTOR_ADDRESS
    ) -> subprocess.Popen[bytes]:
        """Stock ssh through HAProxy from ``source`` to web1, left running."""
        return subprocess.Popen(
            [
                "ssh",
                *who.ssh_args(),
                "-b",
                source,
                "-p",
                str(self.haproxy.ssh_port),
                f"{who.login_name('web1')}@127.0.0.1",
                *remote,
            ],
            env=who.ssh_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def psql(self, who: Contractor, token: str, script: str) -> subprocess.CompletedProcess[str]:
        """Real psql through HAProxy over IPv6 (HAProxy sees ::1, the nodes 127.0.0.1)."""
        dsn = f"host=::1 port={self.haproxy.pg_port} user={who.name} dbname=pg1 sslmode=require"
        env = {**os.environ, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10"}
        env.pop("PGSERVICEFILE", None)
        return subprocess.run(
            ["psql", "-X", "-At", dsn],
            input=script,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )


def second_node(a: BastionHarness, directory: Path) -> BastionHarness:
    """Node b: a's keys (CA, secret, host and signing keys) and state, its own ports,
    recordings and control socket."""
    directory.mkdir(parents=True)
    shutil.copytree(a.dir / "keys", directory / "keys")
    port, pg_port, metrics_port = free_port(), free_port(), free_port()
    text = a.config.path.read_text()
    assert a.config.metrics_listen is not None
    for old, new in {
        'name = "test-node"': 'name = "node-b"',
        f'listen = "127.0.0.1:{a.port}"': f'listen = "127.0.0.1:{port}"',
        f'listen = "127.0.0.1:{a.pg_port}"': f'listen = "127.0.0.1:{pg_port}"',
        f'listen = "127.0.0.1:{a.config.metrics_listen[1]}"': (
            f'listen = "127.0.0.1:{metrics_port}"'
        ),
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path = directory / "bastion.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    b = BastionHarness(directory, load_config(path), a.store, a.ca, port, {}, pg_port=pg_port)
    b.start()
    return b


@pytest.fixture(scope="module")
def fleet(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    database = pg_server.create_database()
    a = make_harness(root / "a", state_url=pg_server.dsn(database), overrides=PROXY_ON)
    b: BastionHarness | None = None
    haproxy: HAProxy | None = None
    try:
        b = second_node(a, root / "b")
        haproxy = start_haproxy(root / "haproxy", [a.port, b.port], [a.pg_port, b.pg_port])
        # Contractors reach the nodes only through HAProxy from now on (the harness's
        # own helpers included: db-token fetches go through it too).
        host_key = a.known_hosts.read_text().split(" ", 1)[1]
        a.known_hosts.write_text(f"[127.0.0.1]:{haproxy.ssh_port} {host_key}")
        a.port, a.pg_port = haproxy.ssh_port, haproxy.pg_port
        yield Fleet(a, b, haproxy, PgTargets.create(a, pg_server))
    finally:
        if haproxy is not None:
            haproxy.stop()
        if b is not None:
            b.stop()
        a.close()
        pg_server.drop_database(database)


def test_contractors_spread_over_both_nodes_with_their_own_address(fleet: Fleet) -> None:
    """Twenty contractors through HAProxy: both nodes serve, every session row and its
    login.ok and session.start audit rows carry 127.0.0.2 (HAProxy connects from 127.0.0.1)."""
    contractors = [fleet.a.contractor("lb") for _ in range(20)]
    for c in contractors:
        fleet.a.grant(c, "web1")
    for batch in range(0, 20, 5):
        running = [(c, fleet.ssh(c, "echo", c.name)) for c in contractors[batch : batch + 5]]
        for c, proc in running:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode(errors="replace")
            assert out == f"{c.name}\n".encode()
    nodes: set[str] = set()
    for c in contractors:
        fleet.a.wait_audit(c.name, "session.end", 15)
        (session,) = fleet.a.store.list_sessions(user=c.name)
        assert session.client_addr.startswith(f"{CONTRACTOR_ADDRESS}:"), session
        nodes.add(session.node)
        for action in ("login.ok", "session.start"):
            (row,) = fleet.a.audit(c.name, action)
            assert row.details["client"].startswith(f"{CONTRACTOR_ADDRESS}:"), row
    assert nodes == {"test-node", "node-b"}
    assert fleet.a.store.verify_audit_chain() is None


def test_psql_through_haproxy_records_the_client_address(fleet: Fleet) -> None:
    """Two psql sessions (round robin: one per node) carry psql's ::1, not 127.0.0.1."""
    who = fleet.a.contractor("lbpg")
    fleet.pg.grant(who)
    for _ in range(2):
        token = fleet.pg.token(who)
        r = fleet.psql(who, token, "SELECT name FROM items ORDER BY id;")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "one\ntwo\n"

    def two_ended() -> list[SessionRecord]:
        sessions = [
            s for s in fleet.a.store.list_sessions(user=who.name) if s.protocol == "postgres"
        ]
        return sessions if len(sessions) == 2 and all(s.ended_at for s in sessions) else []

    sessions = wait_until(two_ended, 15, "both psql sessions to end")
    assert all(s.client_addr.startswith("::1:") for s in sessions), sessions
    assert {s.node for s in sessions} == {"test-node", "node-b"}
    starts = [e for e in fleet.a.audit(who.name, "session.start") if e.subject == "pg1"]
    assert len(starts) == 2 and all(e.details["client"].startswith("::1:") for e in starts), starts


def _refused(node: BastionHarness, reason: str, count: int) -> bool:
    return node.log().count(f"({reason})") >= count


def _send(source: str, port: int, data: bytes, close: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    if data:
        sock.sendall(data)
    if close:
        sock.shutdown(socket.SHUT_WR)
    return sock


def _closed_by_node(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


@pytest.mark.parametrize("listener", ["ssh", "postgres"])
def test_bad_headers_are_refused_and_logged(fleet: Fleet, listener: str) -> None:
    """Straight to node b (bypassing HAProxy): each is closed, logged, and the node serves on."""
    b = fleet.b
    port = b.config.ssh.listen_port if listener == "ssh" else b.pg_port
    good = encode_v2(("198.51.100.7", 40000), ("127.0.0.1", port))
    before = {r: b.log().count(f"({r})") for r in ("untrusted-proxy", "truncated", "bad-signature")}
    cases = [
        # a PROXY header (a valid one) from an address outside trusted_proxies
        ("untrusted-proxy", _send(CONTRACTOR_ADDRESS, port, good, close=False)),
        # the balancer's header cut short, then the connection closed
        ("truncated", _send("127.0.0.1", port, good[:20])),
        # a v2 header whose signature is wrong in its last byte
        ("bad-signature", _send("127.0.0.1", port, V2_SIGNATURE[:11] + b"X" + good[12:], False)),
    ]
    for reason, sock in cases:
        assert _closed_by_node(sock), reason
        count = before[reason] + 1
        wait_until(lambda: _refused(b, reason, count), 10, f"the {reason} log line")  # noqa: B023
    log = b.log()
    assert f"{listener}: refused connection from {CONTRACTOR_ADDRESS}:" in log
    assert "not in" in log and f"{listener}.trusted_proxies" in log
    assert b.proc is not None and b.proc.poll() is None
    # The node keeps serving: a contractor through HAProxy reaches it (round robin:
    # of two logins, one lands on each node).
    who = fleet.a.contractor("after")
    fleet.a.grant(who, "web1")
    if listener == "ssh":
        for _ in range(2):
            proc = fleet.ssh(who, "echo", "still-serving")
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0 and out == b"still-serving\n", err
    else:
        fleet.pg.grant(who)
        for _ in range(2):
            r = fleet.psql(who, fleet.pg.token(who), "SELECT 1;")
            assert r.returncode == 0 and r.stdout == "1\n", r.stderr
    wait_until(
        lambda: {s.node for s in fleet.a.store.list_sessions(user=who.name)} >= {"node-b"},
        15,
        "a session on node b after the refusals",
    )


def test_per_source_cap_counts_the_contractor_not_the_balancer(fleet: Fleet) -> None:
    """Idle connections from 127.0.0.2 fill its per-source cap on both nodes; a login
    from 127.0.0.3 still gets through (with the balancer's address as the source, all
    would share one cap), and one more from 127.0.0.2 is dropped."""
    cap = fleet.a.config.ssh.per_source_max_startups
    nodes = (fleet.a, fleet.b)
    base = [n.gauge("unauthenticated_connections") for n in nodes]
    idle: list[socket.socket] = []
    try:
        for _ in range(2 * cap):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((CONTRACTOR_ADDRESS, 0))
            s.connect(("127.0.0.1", fleet.haproxy.ssh_port))
            idle.append(s)
        wait_until(
            lambda: all(
                n.gauge("unauthenticated_connections") >= b + cap
                for n, b in zip(nodes, base, strict=True)
            ),
            15,
            "the idle connections to count on both nodes",
        )
        who = fleet.a.contractor("cap")
        fleet.a.grant(who, "web1")
        other = fleet.ssh(who, "echo", "other-address", source="127.0.0.3")
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0 and out == b"other-address\n", err
        same = fleet.ssh(who, "echo", "same-address")
        out, err = same.communicate(timeout=60)
        assert same.returncode == 255 and out == b"", err
    finally:
        for s in idle:
            s.close()
    refusal = f"connections from {CONTRACTOR_ADDRESS} are already logging in"
    assert any(refusal in n.log() for n in nodes)
