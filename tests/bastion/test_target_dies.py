"""A target that dies mid-session: the contractor is told, the session ends, nothing is lost.

Each test gets its own real target and kills it the hard way: an OpenSSH sshd
started for the test and SIGKILLed (the listener and every per-connection and
session process it spawned, as a crashed machine would lose them), or a
throwaway PostgreSQL 15 cluster stopped with ``pg_ctl stop -m immediate``.
Asserted each time: what the stock client shows, the session row's end reason,
the recording (sealed, ``bastion verify`` says intact) and the ``session.end``
audit row.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import psycopg
import pytest

from bastion.openssh_target import OpenSSHTarget
from bastion.session.reasons import EndReason
from bastion.store.models import Credset, SessionRecord, TargetKind
from bastion.target_setup import default_principal
from tests.peers.bastion_node import LOGIN, BastionHarness, Contractor
from tests.peers.postgres import PgServer, find_pg_bin, start_pg_server, stop_immediately
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (read from /proc, Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants at once, as a machine dies (sshd's
    per-connection children call setsid(), so a process group would miss them; all are
    stopped before any is killed, so no sshd reports its shell's death)."""
    for _ in range(5):
        alive = _descendants(pid) if Path(f"/proc/{pid}").exists() else set()
        if not alive:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):  # frozen first: none sees another die
            for p in alive:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)  # zombies are reaped by their parents; recheck


@pytest.fixture
def doomed(bastion: BastionHarness, tmp_path: Path) -> Iterator[tuple[str, OpenSSHTarget]]:
    """A dedicated sshd target registered on the shared node, for one test to kill."""
    name = f"doomed{secrets.token_hex(3)}"
    target = OpenSSHTarget(
        tmp_path / name, bastion.ca.public_key_line(), default_principal(name), [LOGIN]
    )
    target.start()
    bastion.store.add_target(
        name=name,
        kind=TargetKind.SSH,
        host=target.host,
        port=target.port,
        logins=[LOGIN],
        principal=default_principal(name),
        host_keys=[target.host_key_line],
        now=time.time(),
    )
    try:
        yield name, target
    finally:
        target.stop()


def _kill_sshd(target: OpenSSHTarget) -> None:
    pid = int((target.workdir / "sshd.pid").read_text().split()[0])
    _kill_tree(pid)


def _live_session(bastion: BastionHarness, who: Contractor) -> SessionRecord:
    found: list[SessionRecord] = []

    def live() -> bool:
        found[:] = bastion.store.list_sessions(live=True, user=who.name)
        return bool(found)

    wait_until(live, 15, f"a live session of {who.name}")
    return found[0]


def _ended(bastion: BastionHarness, session_id: str) -> SessionRecord:
    """The session row once ended and audited; its recording sealed and intact."""
    rows: list[SessionRecord] = []

    def ended() -> bool:
        s = bastion.store.get_session(session_id)
        if s is None or s.ended_at is None:
            return False
        rows[:] = [s]
        return True

    wait_until(ended, 20, f"session {session_id} to end")
    s = rows[0]
    assert s.recording is not None and s.final_hash is not None and s.final_signature, s
    verify = bastion.cli("verify", session_id)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.splitlines()[0] == "intact"
    audit = [
        r
        for r in bastion.wait_audit(s.user_name, "session.end", 10)
        if r.details.get("session") == session_id
    ]
    assert audit, f"no session.end audit row for {session_id}"
    assert audit[-1].details["reason"] == s.end_reason
    return s


def test_ssh_target_killed_mid_pty_session(
    bastion: BastionHarness, doomed: tuple[str, OpenSSHTarget]
) -> None:
    name, target = doomed
    who = bastion.contractor()
    bastion.grant(who, name)
    child = who.ssh_pty(name)
    try:
        child.sendline("echo alive-$((40+2))")
        child.expect("alive-42")
        live = _live_session(bastion, who)
        _kill_sshd(target)
        child.expect(f"bastion: connection to {name} was lost", timeout=20)
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close()
    assert child.exitstatus == 255
    s = _ended(bastion, live.id)
    assert s.end_reason == EndReason.UPSTREAM_LOST


def test_ssh_target_killed_mid_exec_stream(
    bastion: BastionHarness, doomed: tuple[str, OpenSSHTarget]
) -> None:
    name, target = doomed
    who = bastion.contractor()
    bastion.grant(who, name)
    proc = who.ssh_stream(name, "while :; do echo tick; sleep 0.05; done")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"tick\n"
        live = _live_session(bastion, who)
        _kill_sshd(target)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 255
    assert f"bastion: connection to {name} was lost".encode() in err, err
    s = _ended(bastion, live.id)
    assert s.end_reason == EndReason.UPSTREAM_LOST
    assert s.bytes_out > 0


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def doomed_pg(bastion: BastionHarness) -> Iterator[tuple[str, PgServer]]:
    """A throwaway PostgreSQL 15 cluster registered as a database target, to be killed."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries not found (apt-get install postgresql)")
    with start_pg_server(bin_dir) as server:
        name = f"doomedpg{secrets.token_hex(3)}"
        role, password = f"r_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
        server.create_role(role, password)
        server.execute(f'CREATE DATABASE app OWNER "{role}"')
        bastion.store.add_target(
            name=name,
            kind=TargetKind.POSTGRES,
            host=server.host,
            port=server.port,
            logins=[],
            principal=name,
            database="app",
            credsets=[Credset("readwrite", role, password)],
            now=time.time(),
        )
        yield name, server


def _pg_token(bastion: BastionHarness, who: Contractor, target: str) -> str:
    now = time.time()
    bastion.store.add_grant(
        user_id=who.user.id,
        target_id=bastion.target(target).id,
        login=None,
        credset="readwrite",
        not_before=now,
        not_after=now + 3600,
        reason="test",
        requested_by="test",
        approved_by="test",
        options=(),
        now=now,
    )
    result = who.ssh("db-token", target)
    found = re.search(r"token:\s*(\S+)", result.stdout.decode(errors="replace"))
    assert result.returncode == 0 and found, (result.stdout, result.stderr)
    return found.group(1)


def test_postgres_target_stopped_immediately_mid_session_psycopg(
    bastion: BastionHarness, doomed_pg: tuple[str, PgServer]
) -> None:
    name, server = doomed_pg
    who = bastion.contractor()
    token = _pg_token(bastion, who, name)
    with psycopg.connect(
        host="127.0.0.1",
        port=bastion.pg_port,
        user=who.name,
        dbname=name,
        password=token,
        sslmode="require",
        connect_timeout=10,
        autocommit=True,
    ) as conn:
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
        live = _live_session(bastion, who)
        stop_immediately(server)
        with pytest.raises(psycopg.OperationalError) as failed:
            conn.execute("SELECT 1")
    assert "bastion: the target closed the connection" in str(failed.value)
    s = _ended(bastion, live.id)
    assert s.end_reason == EndReason.UPSTREAM_CLOSED


def test_postgres_target_stopped_immediately_mid_session_psql(
    bastion: BastionHarness, doomed_pg: tuple[str, PgServer]
) -> None:
    name, server = doomed_pg
    who = bastion.contractor()
    token = _pg_token(bastion, who, name)
    env = {**os.environ, "PGPASSWORD": token, "PGCONNECT_TIMEOUT": "10"}
    dsn = f"host=127.0.0.1 port={bastion.pg_port} user={who.name} dbname={name} sslmode=require"
    psql = pexpect.spawn("psql", ["-X", dsn], env=env, timeout=20)
    try:
        psql.sendline("SELECT 40 + 2 AS answer;")
        psql.expect("42")
        live = _live_session(bastion, who)
        stop_immediately(server)
        psql.sendline("SELECT 1;")
        psql.expect("FATAL:  bastion: the target closed the connection")
        psql.sendline(r"\q")
        psql.expect(pexpect.EOF)
    finally:
        psql.close(force=True)
    s = _ended(bastion, live.id)
    assert s.end_reason == EndReason.UPSTREAM_CLOSED
