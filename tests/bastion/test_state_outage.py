"""The state database goes away mid-session (issue 18, threat-model row F3).

A real node on a private PostgreSQL state server that the test stops and starts
again: new logins are refused with words the contractor can read, /healthz says
what is wrong, the live session goes on (recorded) for ``outage_grace`` and then
ends as ``state-unavailable``; what the node wrote meanwhile waits in the outbox
and reaches the database when it returns, and the audit chain still verifies.
"""

from __future__ import annotations

import asyncio
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pexpect
import psycopg
import pytest

from bastion.control.client import ControlClient
from bastion.control.messages import ControlError
from bastion.errors import StoreError
from bastion.session.reasons import STATE_UNAVAILABLE_LOGIN
from bastion.store.models import Role, SessionRecord
from recorder import RecordingReader, verify
from recorder.events import Output
from recorder.keys import load_public_key
from tests.peers.bastion_node import BastionHarness, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer, find_pg_bin, restart, start_pg_server, stop_fast
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
GRACE = 3


@pytest.fixture
def state_server() -> Iterator[PgServer]:
    """A PostgreSQL of this test's own: stopping it must not disturb other tests."""
    bin_dir = find_pg_bin()
    assert bin_dir is not None, "PostgreSQL server binaries not found"
    with start_pg_server(bin_dir) as server:
        yield server


def _health(b: BastionHarness) -> tuple[int, str]:
    listen = b.config.metrics_listen
    assert listen is not None
    try:
        with urllib.request.urlopen(f"http://{listen[0]}:{listen[1]}/healthz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _unhealthy(b: BastionHarness) -> str:
    """The body of a 503 from /healthz, or "" while it answers 200."""
    status, body = _health(b)
    return body if status == 503 else ""


async def _control_sessions(sock: str, user: str) -> None:
    async with await ControlClient.connect(sock, user=user) as client:
        await client.list_sessions(limit=5)


def _replayed_end(b: BastionHarness, session_id: str) -> SessionRecord | None:
    """The session's row once its end is in the database (replayed from the outbox)."""
    s = _answer(lambda: b.store.get_session(session_id))
    return s if s is not None and s.ended_at is not None else None


def _answer(read: Callable[[], T]) -> T | None:
    """``read()``, or None while the test's own store still finds the database away."""
    try:
        return read()
    except StoreError:
        return None


def test_state_outage_refuses_logins_ends_sessions_and_replays(
    tmp_path: Path, state_server: PgServer, pg_server: PgServer
) -> None:
    url = state_server.dsn(state_server.create_database())
    b = make_harness(
        tmp_path / "node", state_url=url, overrides={"outage_grace = 60": f"outage_grace = {GRACE}"}
    )
    restarted: subprocess.Popen[bytes] | None = None
    try:
        pg = PgTargets.create(b, pg_server)
        c, late, db_user = b.contractor(), b.contractor("late"), b.contractor("db")
        admin = b.contractor("adm", Role.ADMIN)
        b.grant(c, "web1")
        b.grant(late, "web1")
        pg.grant(db_user)
        token = pg.token(db_user)
        sock = b.control_socket()
        child = c.ssh_pty("web1", timeout=20)
        child.sendline("echo before-$((1+1))")
        child.expect("before-2")
        (live,) = b.store.list_sessions(user=c.name, live=True)
        db = psycopg.connect(**pg.conninfo(db_user, password=token), autocommit=True)
        assert db.execute("SELECT 40 + 2").fetchone() == (42,)
        (db_live,) = b.store.list_sessions(user=db_user.name, live=True)
        assert _health(b)[0] == 200

        stop_fast(state_server)
        # /healthz says what is wrong, within the node's probe interval
        body = wait_until(lambda: _unhealthy(b), 10, "/healthz to report the outage")
        assert "state database unreachable" in body and "new logins are refused" in body
        # the live session still relays (and records) while the grace runs
        child.sendline("echo during-$((2+3))")
        child.expect("during-5")
        assert db.execute("SELECT 'during-' || 7").fetchone() == ("during-7",)
        # a new SSH login is refused with words the contractor reads in ssh's output
        refused = late.ssh("true", target="web1", code="000000", timeout=30)
        assert refused.returncode == 255
        assert STATE_UNAVAILABLE_LOGIN.encode() in refused.stderr.replace(b"\r\n", b" "), (
            refused.stderr
        )
        # ... and so is a PostgreSQL login: psql prints the FATAL
        psql = pg.psql(db_user, token, "SELECT 1;\n")
        assert psql.returncode != 0
        assert "FATAL" in psql.stderr and "cannot reach its state database" in psql.stderr, (
            psql.stderr
        )
        # the control API answers at once, and says what is wrong
        with pytest.raises(ControlError, match="PostgreSQL state store"):
            asyncio.run(asyncio.wait_for(_control_sessions(sock, admin.name), 10))
        # the grace ends: the sessions are closed with a reason the contractor sees
        child.expect("lost its state database", timeout=GRACE + 15)
        child.expect(pexpect.EOF, timeout=15)
        with pytest.raises(psycopg.OperationalError) as db_ended:
            wait_until(lambda: db.execute("SELECT 1") and False, 15, "its end", interval=0.2)
        assert "lost its state database" in str(db_ended.value)
        db.close()
        status, body = _health(b)
        assert status == 503 and "wait in the outbox" in body, body
        log = b.log()
        assert "state database unreachable" in log
        assert "refusing login of" in log and "Traceback" not in log, log[-4000:]

        restarted = restart(state_server)

        ended = wait_until(
            lambda: _replayed_end(b, live.id), 30, "the session's end to be replayed"
        )
        assert ended is not None  # for the type checker: wait_until returns a truthy value
        assert ended.end_reason == "state-unavailable"
        assert ended.bytes_out > 0 and ended.bytes_in > 0 and ended.events > 0
        assert ended.final_hash and ended.recording
        db_ended_row = wait_until(
            lambda: _replayed_end(b, db_live.id), 10, "the database session's end"
        )
        assert db_ended_row is not None
        assert db_ended_row.end_reason == "state-unavailable" and db_ended_row.final_hash
        assert db_ended_row.bytes_out > 0
        wait_until(lambda: _health(b)[0] == 200, 15, "/healthz to recover")
        assert b.gauge("state_outbox_pending") == 0
        ended = b.store.get_session(live.id)  # the outbox is drained: repacked hash and all
        assert ended is not None and ended.recording
        # the audit rows written during the outage, in the chain, which still verifies
        (end,) = b.audit(c.name, "session.end")
        assert end.details["reason"] == "state-unavailable"
        assert end.details["final_hash"] == ended.final_hash
        (terminated,) = b.audit(c.name, "session.terminated")
        assert terminated.details["reason"] == "state-unavailable"
        assert terminated.id < end.id
        (failed,) = b.audit(late.name, "login.failed")
        assert failed.details["reason"] == "state-unavailable"
        refusals = [
            e for e in b.audit(db_user.name) if e.details.get("reason") == "state-unavailable"
        ]
        assert refusals, b.audit(db_user.name)
        assert b.store.verify_audit_chain() is None
        verified = b.cli("audit", "--verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        # the recording is sealed, verifies, and holds what was typed during the outage
        path = b.config.recordings_dir / ended.recording
        public = load_public_key(str(b.config.recording_signing_key) + ".pub")
        assert verify(path, public).status == "intact"
        with RecordingReader.open(path) as reader:
            output = b"".join(e.data for e in reader.events() if isinstance(e, Output))
        assert b"during-5" in output
        check = b.cli("verify", live.id)
        assert check.returncode == 0, check.stdout + check.stderr
        # and logins work again
        again = late.ssh("echo back", target="web1")
        assert again.returncode == 0 and again.stdout == b"back\n", again.stderr
    finally:
        b.close()
        if restarted is not None:
            stop_fast(state_server)
            restarted.wait(timeout=30)


def test_writes_of_a_node_stopped_during_the_outage_reach_the_database_at_its_next_start(
    tmp_path: Path, state_server: PgServer
) -> None:
    url = state_server.dsn(state_server.create_database())
    b = make_harness(tmp_path / "node", state_url=url)
    restarted: subprocess.Popen[bytes] | None = None
    try:
        c = b.contractor()
        b.grant(c, "web1")
        child = c.ssh_pty("web1", timeout=20)
        child.sendline("echo kept-$((3+4))")
        child.expect("kept-7")
        (live,) = b.store.list_sessions(user=c.name, live=True)
        stop_fast(state_server)
        wait_until(lambda: _unhealthy(b), 10, "/healthz to report the outage")
        b.stop()  # a routine stop while the database is away: the rows go to the outbox
        child.expect(pexpect.EOF, timeout=15)
        outbox = b.config.outbox_path
        assert outbox.exists() and oct(outbox.stat().st_mode & 0o777) == "0o600"

        restarted = restart(state_server)
        b.start()  # replays the outbox before crash recovery could close the row
        ended = wait_until(lambda: _replayed_end(b, live.id), 30, "the replayed end")
        assert ended is not None
        assert ended.end_reason == "node-stop"  # not node-crash: the real end was kept
        assert ended.bytes_out > 0 and ended.events > 0 and ended.final_hash
        assert b.audit("node", "node.stop")
        assert b.store.verify_audit_chain() is None
        assert "replayed" in b.log() and "left by the last run" in b.log()
    finally:
        b.close()
        if restarted is not None:
            stop_fast(state_server)
            restarted.wait(timeout=30)
