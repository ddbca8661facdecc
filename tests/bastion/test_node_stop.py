"""A routine stop (SIGTERM) and a reload (SIGHUP) of a real node with real clients.

SIGTERM during a PTY session, an exec streaming output, an SFTP upload and a
psql-style session: every client is told why, every row ends ``node-stop`` with
real counts, every recording verifies intact and holds the last output the
client received, and the node exits 0. A second SIGTERM cuts the grace period
short. SIGHUP with a changed and with a broken file leaves live sessions alone.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import psycopg
import pytest

from bastion.store.models import Credset, SessionRecord, TargetKind
from recorder import RecordingReader, verify
from recorder.events import Input, Output
from recorder.keys import load_public_key
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer

pytestmark = pytest.mark.integration

STOP_WORDS = "this node is stopping for maintenance"


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def node(tmp_path: Path, pg_server: PgServer) -> Iterator[tuple[BastionHarness, PgTargets]]:
    """A node of this test's own (it gets stopped), with an SSH and a database target."""
    harness = make_harness(tmp_path / "node", overrides={"stop_grace = 5": "stop_grace = 3"})
    try:
        role, password = f"stop_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
        pg_server.create_role(role, password)
        db = pg_server.create_database(owner=role)
        harness.store.add_target(
            name="pgstop",
            kind=TargetKind.POSTGRES,
            host=pg_server.host,
            port=pg_server.port,
            logins=[],
            principal="pgstop",
            database=db,
            credsets=[Credset("readwrite", role, password)],
            now=time.time(),
        )
        yield harness, PgTargets(harness, pg_server, role, role)
    finally:
        harness.close()


def _sessions(b: BastionHarness, who: Contractor) -> list[SessionRecord]:
    return b.store.list_sessions(user=who.name)


def _ended(b: BastionHarness, who: Contractor) -> SessionRecord:
    (s,) = _sessions(b, who)
    assert s.ended_at is not None, f"session of {who.name} still open"
    return s


def _intact(b: BastionHarness, s: SessionRecord) -> Path:
    path = b.config.recordings_dir / (s.recording or "")
    public = load_public_key(str(b.config.recording_signing_key) + ".pub")
    result = verify(path, public)
    assert result.status == "intact", str(result)
    return path


def _recorded(path: Path, kind: type[Input] | type[Output]) -> bytes:
    with RecordingReader.open(path) as reader:
        return b"".join(e.data for e in reader.events() if isinstance(e, kind))


def _live_count(b: BastionHarness, n: int) -> None:
    _wait(lambda: len(b.store.list_sessions(live=True)) >= n, 30, f"{n} live sessions")


def test_sigterm_tells_ends_and_seals_every_session(
    node: tuple[BastionHarness, PgTargets], tmp_path: Path
) -> None:
    b, pg = node
    pty_user, exec_user, sftp_user, db_user = (b.contractor(p) for p in ("pty", "ex", "sf", "db"))
    b.grant(pty_user, "web1")
    b.grant(exec_user, "web1")
    b.grant(sftp_user, "web1", options=("sftp",))
    pg.grant(db_user, "pgstop")
    token = pg.token(db_user, "pgstop")

    # 1. a terminal session
    pty = pty_user.ssh_pty("web1")
    pty.sendline("echo pty-$((40+2))")
    pty.expect("pty-42")
    # 2. an exec streaming output
    streamer = exec_user.ssh_stream(
        "web1", "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.02; done"
    )
    # 3. an SFTP upload slow enough to be under way when the node stops
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    batch = tmp_path / "batch"
    batch.write_text(f"put {big} big-upload.bin\n")
    uploader = subprocess.Popen(
        [
            "sftp",
            *sftp_user.ssh_args(),
            "-o",
            "BatchMode=no",
            "-l",
            "800",
            "-b",
            str(batch),
            "-P",
            str(b.port),
            f"{sftp_user.login_name('web1')}@127.0.0.1",
        ],
        env=sftp_user.ssh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    # 4. a database session (psycopg, like any libpq client)
    notices: list[str] = []
    conn = psycopg.connect(**pg.conninfo(db_user, "pgstop"), password=token, autocommit=True)
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    assert conn.execute("select 1").fetchone() == (1,)

    _live_count(b, 4)
    assert streamer.stdout is not None
    first = streamer.stdout.readline()
    assert first.startswith(b"line-")
    # The upload runs at 100 KB/s (4 MiB: ~40 s); give it a moment to be under way.
    time.sleep(1.0)

    assert b.proc is not None
    proc = b.proc
    proc.send_signal(signal.SIGTERM)

    # During the grace period the sessions go on, and each client has been told.
    pty.expect(STOP_WORDS, timeout=10)
    pty.sendline("echo still-$((1+1))")
    pty.expect("still-2", timeout=10)
    _wait(lambda: conn.execute("select 2").fetchone() == (2,) and bool(notices), 10, "a notice")
    assert any(STOP_WORDS in n for n in notices), notices

    assert proc.wait(timeout=60) == 0, b.log()[-3000:]
    b.proc = None

    # The terminal: told, then closed.
    pty.expect(pexpect.EOF, timeout=20)
    pty_text = (pty.before or b"").decode(errors="replace")
    assert "closing this session" in pty_text, pty_text
    # The exec stream: told on stderr; the last line it received is in the recording.
    out, err = streamer.communicate(timeout=20)
    assert STOP_WORDS.encode() in err, err
    last_seen = [x for x in (first + out).split() if x.startswith(b"line-")][-1]
    # SFTP: the transfer was cut.
    uploader.communicate(timeout=20)
    assert uploader.returncode != 0
    # The database client gets 57P01 with the reason at its next statement.
    with pytest.raises(psycopg.OperationalError) as failed:
        conn.execute("select 3")
    assert STOP_WORDS in str(failed.value) or "57P01" in str(getattr(failed.value, "sqlstate", ""))
    conn.close()

    for who in (pty_user, exec_user, sftp_user, db_user):
        s = _ended(b, who)
        assert s.end_reason == "node-stop", (who.name, s.end_reason)
        assert s.events > 0 and s.bytes_out > 0, (who.name, s)
        path = _intact(b, s)
        if who is exec_user:
            assert last_seen in _recorded(path, Output)
            assert s.bytes_out >= len(first + out) - len(err)
        if who is pty_user:
            assert b"still-2" in _recorded(path, Output)
        if who is sftp_user:
            assert s.bytes_in > 50_000, s  # part of the upload crossed and was counted
    stops = b.audit("node", "node.stop")
    assert stops and stops[-1].details.get("unsealed") == 0
    assert "Traceback" not in b.log()


def test_second_sigterm_ends_sessions_at_once(tmp_path: Path) -> None:
    b = make_harness(tmp_path / "node", overrides={"stop_grace = 5": "stop_grace = 600"})
    try:
        c = b.contractor()
        b.grant(c, "web1")
        streamer = c.ssh_stream("web1", "while true; do echo tick; sleep 0.05; done")
        assert streamer.stdout is not None
        assert streamer.stdout.readline() == b"tick\n"
        assert b.proc is not None
        proc = b.proc
        proc.send_signal(signal.SIGTERM)
        _wait(lambda: "stop signal" in b.log(), 10, "the first signal to be handled")
        proc.send_signal(signal.SIGTERM)
        # With a 600 s grace, only the second signal can end the node this soon.
        assert proc.wait(timeout=60) == 0, b.log()[-3000:]
        b.proc = None
        _out, err = streamer.communicate(timeout=20)
        assert STOP_WORDS.encode() in err
        s = _ended(b, c)
        assert s.end_reason == "node-stop" and s.bytes_out > 0
        _intact(b, s)
    finally:
        b.close()


def test_sighup_reloads_without_dropping_sessions(tmp_path: Path) -> None:
    b = make_harness(tmp_path / "node")
    try:
        c = b.contractor()
        b.grant(c, "web1")
        pty = c.ssh_pty("web1")
        pty.sendline("echo before-$((1+1))")
        pty.expect("before-2")
        assert b.proc is not None
        original = b.config.path.read_text()

        # A changed file: the live settings apply, the session goes on.
        b.config.path.write_text(
            original.replace("warn_before = [3, 1.5]", "warn_before = [120, 30]").replace(
                'listen = "127.0.0.1:', 'listen = "127.0.0.2:', 1
            )
        )
        b.proc.send_signal(signal.SIGHUP)
        (reload,) = b.wait_audit("node", "node.reload")
        assert "timebox.warn_before" in reload.details["applied"]
        assert any(k.startswith("ssh.listen") for k in reload.details["needs_restart"])
        pty.sendline("echo after-change-$((2+2))")
        pty.expect("after-change-4")

        # A broken file: nothing changes, the session goes on.
        b.config.path.write_text(original + "\n[timebox\nbroken = \n")
        b.proc.send_signal(signal.SIGHUP)
        (refused,) = b.wait_audit("node", "node.reload-refused")
        assert "not valid TOML" in refused.details["error"]
        pty.sendline("echo after-broken-$((3+3))")
        pty.expect("after-broken-6")
        assert b.proc.poll() is None
        assert len(b.store.list_sessions(live=True, user=c.name)) == 1
        pty.sendline("exit")
        pty.expect(pexpect.EOF)
    finally:
        b.close()
