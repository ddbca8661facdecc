"""Guessing, penalties and floods against a real node, with real clients.

Per-address blocks (``[login_limits]``, in the state DB: a second node on the same
DB refuses too), the per-user lockout whatever the address, per-source penalties
under the issue's one-address flood, failed logins that allocate nothing, and the
PostgreSQL count of logins in progress with ``max_startups = 1``.

The clients are stock ``ssh`` (``-o BindAddress=127.0.0.N``: all of 127.0.0.0/8 is
local on Linux, so each test guesses from its own source), paramiko on a socket
bound the same way, ``psql`` and psycopg (from 127.0.0.1: libpq cannot bind), and
raw sockets for connections that never log in. 127.0.0.1 and 127.0.0.16/28 are
exempt from penalties so the block tests count failures without being penalised.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import paramiko
import pexpect
import psycopg
import pytest

from bastion.openssh_target import free_port
from bastion.pg.encoding import encode
from bastion.pg.messages import PasswordMessage, SSLRequest, StartupMessage
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

MAX_FAILURES = 4
PENALTIES = "authfail:5 noauth:1 grace-exceeded:10 min:15 max:600"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[PgTargets]:
    harness = make_harness(
        Path(tmp_path_factory.mktemp("limits")),
        overrides={
            'penalties = "no"': f'penalties = "{PENALTIES}"',
            "address_max_failures = 0": f"address_max_failures = {MAX_FAILURES}",
            "address_block = 60": "address_block = 300",
            "penalty_exempt = []": 'penalty_exempt = ["127.0.0.1/32", "127.0.0.16/28"]',
            "login_grace = 30": "login_grace = 5",  # [ssh]; [postgres] is 5 in every test
        },
    )
    try:
        yield PgTargets.create(harness, pg_server)
    finally:
        harness.close()


def _ssh(
    who: Contractor, source: str, *remote: str, port: int | None = None, code: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Stock ssh from ``source`` (BindAddress) to a node, one TOTP prompt."""
    h = who.harness
    cmd = [
        "ssh",
        *who.ssh_args(),
        "-o",
        f"BindAddress={source}",
        "-o",
        "NumberOfPasswordPrompts=1",
        "-p",
        str(port or h.port),
        f"{who.login_name('web1')}@127.0.0.1",
        *remote,
    ]
    return subprocess.run(
        cmd, input=b"", capture_output=True, env=who.ssh_env(code), timeout=60, check=False
    )


def _bound(source: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _stranger_key() -> paramiko.PKey:
    """A key no user has (paramiko cannot generate Ed25519 keys)."""
    return paramiko.ECDSAKey.generate()


def _paramiko_guess(source: str, port: int, user: str, key: paramiko.PKey) -> None:
    """A paramiko client from ``source`` offering ``key`` as ``user``: refused."""
    transport = paramiko.Transport(_bound(source, port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_publickey(user, key)
    finally:
        transport.close()


class SecondNode:
    """``bastion serve`` on the same directory and state DB, another SSH port."""

    def __init__(self, h: BastionHarness) -> None:
        self.port = free_port()
        text = h.config.path.read_text()
        metrics = h.config.metrics_listen
        assert metrics is not None
        for old, new in {
            'name = "test-node"': 'name = "test-node-2"',
            'socket = "control.sock"': 'socket = "control-2.sock"',
            f'listen = "127.0.0.1:{h.pg_port}"': 'listen = ""',  # [postgres]: none here
            f'listen = "127.0.0.1:{metrics[1]}"': 'listen = ""',
        }.items():
            assert old in text, old
            text = text.replace(old, new)
        path = h.dir / "node-2.toml"
        path.write_text(text)
        host_pub = h.config.ssh.host_key.with_name(h.config.ssh.host_key.name + ".pub")
        with h.known_hosts.open("a") as f:
            f.write(f"[127.0.0.1]:{self.port} {host_pub.read_text().strip()}\n")
        self.log = h.dir / "node-2.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bastion", "serve", "--config", str(path)]
                + ["--listen", f"127.0.0.1:{self.port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def listening() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return False
            return True

        wait_until(listening, 30, "the second node to listen")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- per-address blocks ---------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_user_names_sprayed_from_one_address_block_it_on_every_node(node: PgTargets) -> None:
    """paramiko offers a key as four user names that do not exist, from 127.0.0.17: the
    fourth failure blocks the address in the state DB, so the second node on the same DB
    refuses a real contractor from there too, with the reason; another address logs in;
    ``bastion lockouts`` shows the block and ``bastion lockouts unblock`` lifts it."""
    h = node.harness
    who = h.contractor("spray")
    h.grant(who, "web1")
    key = paramiko.Ed25519Key.from_private_key_file(str(who.key_path))
    second = SecondNode(h)
    try:
        for i, name in enumerate(("root", "admin", "oracle", "postgres")):
            _paramiko_guess("127.0.0.17", h.port if i % 2 == 0 else second.port, name, key)
        (blocked,) = [
            e for e in h.wait_audit("bastion", "address.blocked") if e.subject == "127.0.0.17"
        ]
        assert blocked.details["failures"] == MAX_FAILURES and blocked.details["strikes"] == 1
        for port in (h.port, second.port):
            r = _ssh(who, "127.0.0.17", "echo in", port=port)
            assert r.returncode == 255, r
            assert b"too many failed logins from 127.0.0.17" in r.stderr, r.stderr
            assert b"bastion lockouts unblock 127.0.0.17" in r.stderr, r.stderr
        r = _ssh(who, "127.0.0.18", "echo in", port=second.port)
        assert r.returncode == 0 and r.stdout == b"in\n", r.stderr
        listed = h.cli("lockouts")
        assert listed.returncode == 0 and "127.0.0.17" in listed.stdout, listed
        lifted = h.cli("lockouts", "unblock", "127.0.0.17")
        assert lifted.returncode == 0, lifted
        assert h.audit("test-admin", "address.unblocked")[-1].subject == "127.0.0.17"
        r = _ssh(who, "127.0.0.17", "echo in", port=second.port)
        assert r.returncode == 0 and r.stdout == b"in\n", r.stderr
    finally:
        second.close()


@pytest.mark.timeout(240)
def test_wrong_codes_spread_over_users_block_the_address_before_any_user_locks(
    node: PgTargets,
) -> None:
    """Two contractors' keys (a stolen laptop with both) guess TOTP codes from 127.0.0.19,
    two wrong codes each: under the per-user lockout (5), at the per-address limit (4)."""
    h = node.harness
    a, b = h.contractor("guessa"), h.contractor("guessb")
    for who in (a, b):
        h.grant(who, "web1")
    for who in (a, b, a, b):
        r = _ssh(who, "127.0.0.19", "true", code=who.wrong_code())
        assert r.returncode == 255 and b"wrong TOTP code" in r.stderr, r.stderr
    r = _ssh(a, "127.0.0.19", "echo in")
    assert r.returncode == 255 and b"too many failed logins from 127.0.0.19" in r.stderr
    for who in (a, b):
        user = h.store.get_user(who.name)
        assert user is not None and user.locked_until is None
        assert not h.audit(who.name, "user.locked")
    r = _ssh(b, "127.0.0.20", "echo in")
    assert r.returncode == 0 and r.stdout == b"in\n", r.stderr


@pytest.mark.timeout(240)
def test_the_per_user_lockout_holds_across_addresses_and_an_admin_sees_and_lifts_it(
    node: PgTargets,
) -> None:
    """Five wrong codes for one user from five addresses (one each: no address reaches
    its limit) lock the user; ``bastion user list`` and ``bastion lockouts`` show until
    when; the right code from a sixth address is refused; ``bastion user unlock`` lifts it."""
    h = node.harness
    who = h.contractor("spread")
    h.grant(who, "web1")
    for n in range(21, 26):
        r = _ssh(who, f"127.0.0.{n}", "true", code=who.wrong_code())
        assert r.returncode == 255, r.stderr
    user = h.store.get_user(who.name)
    assert user is not None and user.locked_until is not None
    listed = h.cli("user", "list")
    assert any(
        line.startswith(who.name) and "locked until" in line for line in listed.stdout.splitlines()
    ), listed.stdout
    assert who.name in h.cli("lockouts").stdout
    r = _ssh(who, "127.0.0.26", "echo in")
    assert r.returncode == 255 and b"is locked" in r.stderr, r.stderr
    assert h.cli("user", "unlock", who.name).returncode == 0
    r = _ssh(who, "127.0.0.27", "echo in")
    assert r.returncode == 0 and r.stdout == b"in\n", r.stderr


@pytest.mark.timeout(240)
def test_wrong_database_tokens_block_the_address_for_psql_too(node: PgTargets) -> None:
    """psql with wrong tokens (from 127.0.0.1) counts against the same per-address limit;
    once blocked, the right token is refused with the reason, until an admin lifts it."""
    h = node.harness
    who = h.contractor("pgguess")
    node.grant(who, "pg1", "readwrite")
    token = node.token(who)
    for _ in range(MAX_FAILURES):
        if any(e.subject == "127.0.0.1" for e in h.audit("bastion", "address.blocked")):
            break
        r = node.psql(who, "not-a-token", "SELECT 1;")
        assert r.returncode == 2 and "FATAL:  bastion:" in r.stderr, r.stderr
    h.wait_audit("bastion", "address.blocked")
    r = node.psql(who, token, "SELECT 1;")
    assert r.returncode == 2, r
    assert "too many failed logins from 127.0.0.1" in r.stderr, r.stderr
    assert h.cli("lockouts", "unblock", "127.0.0.1").returncode == 0
    r = node.psql(who, token, "SELECT 41 + 1;")
    assert r.returncode == 0 and "42" in r.stdout, r
    h.wait_audit(who.name, "session.end")


# --- what a connection that never logs in leaves behind ----------------------------------------


def _tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _pg_wrong_token(source: str, port: int, user: str) -> bytes:
    s = _bound(source, port)
    s.sendall(encode(SSLRequest()))
    assert s.recv(1) == b"S"
    with _tls().wrap_socket(s) as tls:
        tls.sendall(encode(StartupMessage({"user": user, "database": "pg1"})))
        assert tls.recv(9)[:1] == b"R"
        tls.sendall(encode(PasswordMessage("not-a-token")))
        return tls.recv(4096)


@pytest.mark.timeout(240)
def test_failed_and_unauthenticated_connections_allocate_no_session_row_or_recording(
    node: PgTargets,
) -> None:
    """Idle, garbage, unknown-user, wrong-key, wrong-code and wrong-token connections on
    both listeners: no session row, no recording file, and no audit row but the failed
    logins (``login.failed`` over SSH, ``session.refused`` over PostgreSQL)."""
    h = node.harness
    who = h.contractor("preauth")
    h.grant(who, "web1")
    node.grant(who, "pg1", "readwrite")
    wait_until(
        lambda: h.gauge("sessions") == 0 and h.gauge("live_recordings") == 0,
        30,
        "the earlier tests' sessions to be finished and their recordings sealed",
    )
    recordings = h.config.recordings_dir
    files_before = {p for p in recordings.rglob("*") if p.is_file()}
    sessions_before = {s.id for s in h.store.list_sessions(limit=10_000)}
    since = time.time()
    for port in (h.port, h.pg_port):  # idle, then closed; garbage
        _bound("127.0.0.28", port).close()
        with _bound("127.0.0.28", port) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n" * 4)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    _paramiko_guess("127.0.0.29", h.port, "nobody-here", _stranger_key())
    _paramiko_guess("127.0.0.29", h.port, who.name, _stranger_key())  # wrong key
    r = _ssh(who, "127.0.0.30", "true", code=who.wrong_code())
    assert r.returncode == 255 and b"wrong TOTP code" in r.stderr, r.stderr
    assert b"C28P01" in _pg_wrong_token("127.0.0.30", h.pg_port, who.name)
    wait_until(
        lambda: (
            h.gauge("unauthenticated_connections") == 0 and h.gauge("pg_logins_in_progress") == 0
        ),
        15,
        "every unauthenticated connection to be gone",
    )
    assert {s.id for s in h.store.list_sessions(limit=10_000)} == sessions_before
    assert {p for p in recordings.rglob("*") if p.is_file()} == files_before
    rows = h.store.list_audit(since=since)
    assert not [e for e in rows if e.action == "session.start"]
    written = [
        (e.action, e.details.get("reason"))
        for e in rows
        if e.actor in (who.name, "nobody-here", "-")  # "-": a PostgreSQL client with no name yet
    ]
    assert {action for action, _ in written} == {"login.failed", "session.refused"}, written
    assert ("login.failed", "unknown-user") in written and ("login.failed", "wrong-code") in written


# --- per-source penalties: the one-address flood ---------------------------------------


class Flood:
    """Idle connections from one address, reopened as the node closes or refuses them."""

    def __init__(self, source: str, ports: list[int], width: int) -> None:
        self.source, self.ports = source, ports
        self.stop = threading.Event()
        self.opened = 0
        self.closed_at_once = 0
        self.threads = [
            threading.Thread(target=self._hold, args=(port,), daemon=True)
            for port in ports
            for _ in range(width)
        ]

    def _hold(self, port: int) -> None:
        while not self.stop.is_set():
            try:
                s = _bound(self.source, port)
            except OSError:
                time.sleep(0.05)
                continue
            self.opened += 1
            opened = time.monotonic()
            s.settimeout(0.5)
            with s:
                while not self.stop.is_set():
                    try:
                        if not s.recv(4096):
                            break  # refused, penalised or timed out: open another
                    except TimeoutError:
                        continue
                    except OSError:
                        break
            if time.monotonic() - opened < 0.5:
                self.closed_at_once += 1
                time.sleep(0.05)  # refused at accept: do not spin

    def __enter__(self) -> Flood:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


@pytest.mark.timeout(300)
def test_one_address_flooding_both_ports_is_penalised_and_real_logins_succeed(
    node: PgTargets,
) -> None:
    """The issue's case: 100 idle TCP connections per port from one address (127.0.0.3),
    reopened as they time out. The ones admitted sit out login_grace, the source accrues
    grace-exceeded penalties and is then refused at accept on both ports; meanwhile real
    logins succeed: stock ssh from 127.0.0.2 (BindAddress) and psycopg from 127.0.0.1."""
    h = node.harness
    who = h.contractor("realuser")
    h.grant(who, "web1")
    node.grant(who, "pg1", "readwrite")
    token = node.token(who)
    with Flood("127.0.0.3", [h.port, h.pg_port], width=100) as flood:
        wait_until(lambda: flood.opened >= 200, 30, "the flood to open 200 connections")
        wait_until(
            lambda: h.gauge("penalised_sources") >= 1, 60, "the flooding source to be penalised"
        )
        refused_before = flood.closed_at_once
        wait_until(
            lambda: flood.closed_at_once > refused_before + 50,
            30,
            "the penalised source's new connections to be closed at accept",
        )
        for i in range(4):
            r = _ssh(who, "127.0.0.2", f"echo real-{i}")
            assert r.returncode == 0 and r.stdout == f"real-{i}\n".encode(), r.stderr
            with psycopg.connect(**node.conninfo(who, password=token)) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert h.gauge("penalised_sources") >= 1
    assert "127.0.0.3 is penalised" in h.log()


# --- a flood of failing logins does not starve a live session ------------------------------


class FailingLogins:
    """asyncssh clients, each from its own address in 127.3.0.0/16 (a spray no
    per-address limit stops), offering a key for a user that does not exist."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.rate = port, rate
        self.stop = threading.Event()
        self.failed = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _attempt(self, i: int, key: asyncssh.SSHKey) -> None:
        source = f"127.3.{i // 250 % 250 + 1}.{i % 250 + 1}"
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                self.port,
                local_addr=(source, 0),
                username=f"guess{i}",
                client_keys=[key],
                known_hosts=None,
                preferred_auth="publickey",
                connect_timeout=15,
            ):
                raise AssertionError("a guess logged in")
        except asyncssh.PermissionDenied:
            self.failed += 1
        except (OSError, asyncssh.Error, TimeoutError):
            pass  # dropped at max_startups: shed, as it should be

    async def _run(self) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519")
        tasks: list[asyncio.Task[None]] = []
        while not self.stop.is_set():
            tasks.append(asyncio.create_task(self._attempt(len(tasks), key)))
            await asyncio.sleep(1 / self.rate)
        await asyncio.gather(*tasks)

    def __enter__(self) -> FailingLogins:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.timeout(300)
def test_a_live_session_keeps_echoing_and_logins_work_under_a_failing_login_flood(
    node: PgTargets,
) -> None:
    """A live PTY session through the node echoes every line while failing logins
    arrive (a smaller flood than bench/login_flood.py's 200/s, which measures the
    latency), and a real login still gets in. Behaviour only, no timing asserted."""
    h = node.harness
    who = h.contractor("live")
    h.grant(who, "web1")
    child = who.ssh_pty("web1", timeout=60)
    try:
        child.sendline("echo ready-$((6*7))")
        child.expect("ready-42")
        with FailingLogins(h.port, rate=40) as flood:
            wait_until(lambda: flood.failed >= 40, 60, "40 failing logins to be refused")
            for i in range(10):
                child.sendline(f"echo live-{i}-$((6*7))")
                child.expect(f"live-{i}-42")
            r = _ssh(who, "127.0.0.2", "echo also-in")
            assert r.returncode == 0 and r.stdout == b"also-in\n", r.stderr
            failed_during = flood.failed
        assert failed_during >= 40
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


# --- PostgreSQL logins in progress with max_startups = 1 -------------------------------------


def _counted_idle(harness: BastionHarness, source: str) -> socket.socket:
    """An idle PostgreSQL connection from ``source`` that the node counts as logging in."""
    for _ in range(20):
        s = _bound(source, harness.pg_port)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            count = harness.gauge("pg_logins_in_progress")
            assert count in (0, 1), f"logins in progress read {count} with max_startups = 1"
            if count == 1:
                return s
            time.sleep(0.05)
        s.close()
    raise AssertionError("the node never counted an idle connection as logging in")


@pytest.mark.timeout(240)
def test_pg_max_startups_one_with_an_idle_connection_held_refuses_psql(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """The issue's report: with max_startups = 1 and one idle connection held, psql got
    through to the password check and the gauge read 0; a connection closing at once drove
    the count below zero. Now the gauge reads 1, psql is refused with the reason, and after
    connections that close at once the count is back at 0 and psql logs in."""
    harness = make_harness(tmp_path / "one", overrides={"max_startups = 100": "max_startups = 1"})
    try:
        node = PgTargets.create(harness, pg_server)
        who = harness.contractor("one")
        node.grant(who, "pg1", "readwrite")
        token = node.token(who)
        for _ in range(5):  # open and close at once
            _bound("127.0.0.1", harness.pg_port).close()
        wait_until(lambda: harness.gauge("pg_logins_in_progress") == 0, 10, "the count to settle")
        # the gauge can read 0 before the node has even accepted the five: an idle
        # connection that lands while one of them still holds the slot is refused, so
        # it is opened again until the node counts it (never more than the one slot)
        idle = _counted_idle(harness, "127.0.0.4")
        with idle:
            r = node.psql(who, token, "SELECT 1;")
            assert r.returncode == 2, r
            assert "too many connections are logging in" in r.stderr, r.stderr
            assert harness.gauge("pg_logins_in_progress") == 1
        wait_until(lambda: harness.gauge("pg_logins_in_progress") == 0, 10, "the slot to free")
        r = node.psql(who, token, "SELECT 41 + 1;")
        assert r.returncode == 0 and "42" in r.stdout, r
    finally:
        harness.close()
