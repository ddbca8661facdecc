"""Recording storage full, on a real (small) tmpfs: fail closed, lose nothing, recover.

A real file system that really fills, not an injected ENOSPC: the node's recording
directory is a 4 MiB tmpfs mounted for the test (needs root, as CI has; skipped
otherwise). With ``[recording] min_free_bytes`` at 1 MiB, a streaming PTY session
fills it: the session and an idle one beside it end as ``recording-failed``, every
byte the contractor got is in the sealed recording, new sessions are refused and
``/healthz`` says why until a filler file is deleted; every recording verifies.
A psycopg session filling it the same way ends too, and every statement that
reached the PostgreSQL server is in its sealed recording.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from recorder import Output, RecordingReader
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

TMPFS_SIZE = 4 * 1024 * 1024
RESERVE = 1024 * 1024
FILLER = 2560 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs for the recordings needs root and mount(8)")
    mnt = tmp_path / "recordings"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def node(tmp_path: Path, small_disk: Path) -> Iterator[BastionHarness]:
    """A node recording onto the small tmpfs, keeping 1 MiB of it in reserve."""
    b = make_harness(
        tmp_path / "node",
        overrides={
            'dir = "recordings"': f'dir = "{small_disk}"',
            "min_free_bytes = 67108864": f"min_free_bytes = {RESERVE}",
        },
    )
    try:
        yield b
    finally:
        b.close()


def _healthz(b: BastionHarness) -> tuple[int, str]:
    assert b.config.metrics_listen is not None
    host, port = b.config.metrics_listen
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        e.close()
        return e.code, body


def _pty_ssh(b: BastionHarness, c: Contractor, command: str) -> subprocess.Popen[bytes]:
    """Stock ``ssh -tt``: a PTY on the target, stdout and stderr kept apart on pipes."""
    return subprocess.Popen(
        ["ssh", *c.ssh_args(), "-tt", "-p", str(b.port), f"{c.login_name('web1')}@127.0.0.1"]
        + [command],
        env=c.ssh_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _only_session(b: BastionHarness, c: Contractor) -> str:
    b.wait_audit(c.name, "session.end", timeout=30)
    (s,) = b.store.list_sessions(user=c.name)
    return s.id


def _recorded_output(b: BastionHarness, session_id: str) -> bytes:
    s = b.store.get_session(session_id)
    assert s is not None and s.recording
    with RecordingReader.open(b.config.recordings_dir / s.recording) as reader:
        return b"".join(e.data for e in reader.events() if isinstance(e, Output))


def _verifies(b: BastionHarness, session_id: str) -> None:
    v = b.cli("verify", session_id)
    assert v.returncode == 0, v.stdout + v.stderr


def test_full_recording_storage_fails_closed_and_recovers(
    node: BastionHarness, small_disk: Path
) -> None:
    b = node
    before, idle, streamer = b.contractor(), b.contractor(), b.contractor()
    for c in (before, idle, streamer):
        b.grant(c, "web1")

    # a recording written while there was room
    r = before.ssh("echo kept-recording", target="web1")
    assert r.returncode == 0, r.stderr
    kept = _only_session(b, before)
    _verifies(b, kept)
    assert _healthz(b) == (200, "ok\n")

    # something else takes most of the disk; still above the reserve
    filler = small_disk / "filler"
    filler.write_bytes(os.urandom(FILLER))
    assert _healthz(b)[0] == 200

    waiting = _pty_ssh(b, idle, "echo idle-ready; sleep 120")
    b.wait_audit(idle.name, "session.start", timeout=30)
    stream = _pty_ssh(
        b, streamer, "head -c 3000000 /dev/urandom | base64 -w 76; sleep 5; echo 'END!MARK'"
    )
    out, err = stream.communicate(timeout=90)

    # the streaming session ended at once, told why, and got nothing unrecorded
    assert stream.returncode == 255, err
    assert b"END!MARK" not in out
    assert b"could not be written" in err
    streamed = _only_session(b, streamer)
    row = b.store.get_session(streamed)
    assert row is not None and row.end_reason == "recording-failed"
    assert row.final_hash, "the recording of the failed session was not sealed"
    recorded = _recorded_output(b, streamed)
    assert len(out) > 100_000, "the session never streamed"
    assert recorded.startswith(out), "the contractor got bytes that are not in the recording"
    failed = b.audit(streamer.name, "recording.failed")
    assert failed and failed[-1].details["at_start"] is False
    assert "min_free_bytes" in failed[-1].details["error"]
    _verifies(b, streamed)

    # the idle session beside it ended too (it could not record its next byte)
    idle_out, idle_err = waiting.communicate(timeout=30)
    assert waiting.returncode == 255
    assert b"idle-ready" in idle_out and b"could not be written" in idle_err
    idle_sid = _only_session(b, idle)
    idle_row = b.store.get_session(idle_sid)
    assert idle_row is not None and idle_row.end_reason == "recording-failed"
    _verifies(b, idle_sid)

    # no room: new sessions are refused with a reason, /healthz says what is wrong
    late = b.contractor()
    b.grant(late, "web1")
    r = late.ssh("echo should-not-run", target="web1")
    assert r.returncode != 0
    assert b"should-not-run" not in r.stdout
    assert b"cannot be recorded" in r.stderr
    assert b.audit(late.name, "session.refused")[-1].details["reason"] == "recording-unavailable"
    status, body = _healthz(b)
    assert status == 503 and "min_free_bytes" in body, body

    # space returns: healthy again, sessions accepted and recorded
    filler.unlink()
    wait_until(lambda: _healthz(b)[0] == 200, 10, "/healthz healthy after space returned")
    r = late.ssh("echo recorded-again", target="web1")
    assert r.returncode == 0, r.stderr
    again = _only_session(b, late)
    assert _recorded_output(b, again) == r.stdout
    _verifies(b, again)

    # what was written before the disk filled is intact
    _verifies(b, kept)


def test_full_storage_ends_a_database_session_with_every_statement_recorded(
    node: BastionHarness, small_disk: Path, pg_server: PgServer
) -> None:
    b = node
    pg = PgTargets.create(b, pg_server)
    who = b.contractor()
    pg.grant(who)
    token = pg.token(who)
    table = f"fill_{secrets.token_hex(4)}"
    with psycopg.connect(**pg.conninfo(who, password=token), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n int, pad text)")
        (small_disk / "filler").write_bytes(os.urandom(FILLER))
        error = None
        for n in range(2000):  # ~10 KiB of recording each: the reserve is crossed long before
            pad = secrets.token_hex(10_000)
            try:
                conn.execute(f"INSERT INTO {table} VALUES ({n}, '{pad}')")  # noqa: S608  own literals
            except psycopg.Error as e:
                error = e
                break
    assert error is not None, "the session was never ended"
    assert "could not be written" in str(error)
    s = pg.session_of(who, timeout=30)
    assert s.end_reason == "recording-failed"
    _verifies(b, s.id)
    recorded = " ".join(str(q.get("sql")) for q in pg.queries(s))
    with psycopg.connect(pg_server.dsn("app")) as admin:
        rows = admin.execute(f"SELECT n FROM {table} ORDER BY n").fetchall()  # noqa: S608
    ran = [r[0] for r in rows]
    assert ran, "no statement reached the target"
    for n in ran:  # every statement that ran on the target is in the sealed recording
        assert f"VALUES ({n}, '" in recorded, f"statement {n} ran but was not recorded"
