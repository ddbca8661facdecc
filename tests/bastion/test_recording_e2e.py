"""Every SSH session is recorded: byte-exact, readable by stock zstd, crash-safe, fail-closed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from recorder import Exit, Input, Marker, Output, RecordingReader, Resize, verify
from recorder.keys import load_public_key
from tests.peers.bastion_node import BastionHarness, make_harness, reports_size
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _recording_path(bastion: BastionHarness, session_id: str) -> Path:
    s = bastion.store.get_session(session_id)
    assert s is not None and s.recording, "session has no recording"
    return bastion.config.recordings_dir / s.recording


def _last_session(bastion: BastionHarness, user: str) -> str:
    bastion.wait_audit(user, "session.end")
    sessions = bastion.store.list_sessions(user=user)
    assert sessions
    return sessions[0].id


def _public_key(bastion: BastionHarness):  # type: ignore[no-untyped-def]
    return load_public_key(str(bastion.config.recording_signing_key) + ".pub")


def test_exec_output_and_input_recorded_byte_for_byte(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    stdin = os.urandom(50_000) + b"\n"
    cmd = "head -c 300000 /dev/urandom; printf '\\377\\376 tail\\n'; cat >/dev/null; exit 3"
    r = c.ssh(cmd, target="web1", stdin=stdin)
    assert r.returncode == 3, r.stderr
    sid = _last_session(bastion, c.name)
    path = _recording_path(bastion, sid)
    with RecordingReader.open(path) as reader:
        events = list(reader.events())
        header = reader.header
    assert header.session_id == sid
    assert header.meta["user"] == c.name and header.meta["target"] == "web1"
    recorded_out = b"".join(e.data for e in events if isinstance(e, Output))
    recorded_in = b"".join(e.data for e in events if isinstance(e, Input))
    assert recorded_out == r.stdout
    assert recorded_in == stdin
    exits = [e for e in events if isinstance(e, Exit)]
    assert exits and exits[-1].status == 3
    row = bastion.store.get_session(sid)
    assert row is not None and row.final_hash and row.final_signature
    result = verify(path, _public_key(bastion), expected_final_hash=row.final_hash)
    assert result.status == "intact", str(result)


def test_stock_zstd_decompresses_a_recording(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web2")
    r = c.ssh("seq 1 20000", target="web2")
    assert r.returncode == 0
    path = _recording_path(bastion, _last_session(bastion, c.name))
    z = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, timeout=30)
    assert z.returncode == 0, z.stderr
    assert b"19999\n20000\n" in z.stdout  # the content is plain inside the frames


def test_pty_session_recording_has_what_the_client_saw_and_resizes(
    bastion: BastionHarness,
) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    child = c.ssh_pty("web1", timeout=20)
    seen = bytearray()

    class Tee:
        def write(self, data: bytes) -> None:
            seen.extend(data)

        def flush(self) -> None:
            pass

    child.logfile_read = Tee()
    try:
        child.sendline("echo recorded-$((3*4)); printf 'caf\\303\\251 \\342\\234\\223\\n'")
        child.expect("recorded-12")
        child.setwinsize(50, 120)
        wait_until(lambda: reports_size(child, "50 120"), 20, "the target's pty to be 50x120")
        child.sendline("echo done-$((1+1))")
        child.expect("done-2")
        child.sendline("exit 4")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 4
    sid = _last_session(bastion, c.name)
    with RecordingReader.open(_recording_path(bastion, sid)) as reader:
        events = list(reader.events())
        header = reader.header
    assert (header.meta["cols"], header.meta["rows"]) == (80, 24)
    out = b"".join(e.data for e in events if isinstance(e, Output))
    typed = b"".join(e.data for e in events if isinstance(e, Input))
    assert b"recorded-12" in out and "café ✓".encode() in out
    assert bytes(out) in bytes(seen)  # contiguous: exactly what reached the client's terminal
    assert b"echo recorded-$((3*4))" in typed and b"exit 4" in typed
    assert Resize(time=0, cols=120, rows=50).cols in [
        e.cols for e in events if isinstance(e, Resize)
    ]
    assert [e.status for e in events if isinstance(e, Exit)] == [4]
    hits = bastion.store.search_commands("recorded-$((3*4))", user=c.name)
    assert [h.session_id for h in hits] == [sid]


def test_time_box_warning_is_a_marker(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", seconds=2.5)
    r = c.ssh("sleep 20", target="web1", timeout=30)
    assert r.returncode == 255
    sid = _last_session(bastion, c.name)
    with RecordingReader.open(_recording_path(bastion, sid)) as reader:
        labels = [e.label for e in reader.events() if isinstance(e, Marker)]
    assert any(label.startswith("warning: grant #") for label in labels)
    assert "terminated: grant-ended" in labels


@pytest.fixture()
def own_bastion(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A bastion of this test's own (it gets killed or broken)."""
    harness = make_harness(tmp_path / "node")
    try:
        yield harness
    finally:
        harness.close()


def test_kill_9_loses_at_most_a_second_and_is_recovered(own_bastion: BastionHarness) -> None:
    b = own_bastion
    c = b.contractor()
    b.grant(c, "web1")
    proc = c.ssh_stream(
        "web1",
        "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo line-$i; sleep 0.05; done",
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    last = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        last = line.strip()
        if last == b"line-60":
            break
    assert last == b"line-60"
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait()
    seen = int(last.split(b"-")[1])
    rest = proc.communicate(timeout=30)[0]
    proc.stdout.close()
    seen += rest.count(b"\n")
    (live,) = b.store.list_sessions(live=True, user=c.name)
    path = b.config.recordings_dir / (live.recording or "")
    public = load_public_key(str(b.config.recording_signing_key) + ".pub")
    result = verify(path, public)
    assert result.status == "truncated", str(result)
    with RecordingReader.open(path) as reader:
        out = b"".join(e.data for e in reader.events() if isinstance(e, Output))
    lines = [int(x.split(b"-")[1]) for x in out.split() if x.startswith(b"line-")]
    assert lines == list(range(1, len(lines) + 1))  # nothing garbled, nothing skipped
    # 0.05 s a line: one second is 20 lines; allow the flush interval plus a tick
    assert lines[-1] >= seen - 30, (lines[-1], seen)
    with RecordingReader.open(path) as reader:
        events = list(reader.events())
        started = reader.header.started_at
    assert events
    # the node repairs the file and ends the session when it comes back
    restart = time.time()
    b.start()
    ended = b.store.get_session(live.id)
    assert ended is not None and ended.end_reason == "node-crash" and ended.final_hash
    # the row keeps what the recording holds, and ends with its last event, not the restart
    assert ended.events == len(events)
    assert ended.bytes_out == sum(len(e.data) for e in events if isinstance(e, Output)) > 0
    assert ended.bytes_in == sum(len(e.data) for e in events if isinstance(e, Input))
    assert ended.ended_at == pytest.approx(started + events[-1].time, abs=1e-6)
    assert ended.ended_at is not None and ended.ended_at < restart
    after = verify(path, public, expected_final_hash=ended.final_hash)
    assert after.status == "truncated" and after.recovered, str(after)
    assert b.audit("node", "session.recovered")


def test_unwritable_recording_storage_refuses_sessions(own_bastion: BastionHarness) -> None:
    b = own_bastion
    c = b.contractor()
    b.grant(c, "web1")
    rec_dir = b.config.recordings_dir
    for p in sorted(rec_dir.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    rec_dir.rmdir()
    rec_dir.write_text("not a directory")  # even root cannot create files below this
    r = c.ssh("echo should-not-run", target="web1")
    assert r.returncode == 1
    assert b"should-not-run" not in r.stdout
    assert b"cannot be recorded" in r.stderr
    failed = b.audit(c.name, "recording.failed")
    assert failed and failed[-1].details["fail_closed"] is True
    assert b.audit(c.name, "session.refused")[-1].details["reason"] == "recording-unavailable"
    assert not b.store.list_sessions(user=c.name)


def test_recording_failure_mid_session_ends_it(tmp_path: Path) -> None:
    # The node may write at most 4 MiB per file (RLIMIT_FSIZE): the recording of a session
    # producing incompressible output hits that and the write fails (EFBIG), as on a full disk.
    b = make_harness(tmp_path / "node", fsize_limit=4 * 1024 * 1024)
    try:
        c = b.contractor()
        b.grant(c, "web1")
        r = c.ssh(
            "head -c 50000000 /dev/urandom | base64 -w0; sleep 5; echo 'END!MARK'",
            target="web1",
            timeout=60,
        )
        assert r.returncode == 255
        assert b"END!MARK" not in r.stdout
        assert b"could not be written" in r.stderr
        failed = b.wait_audit(c.name, "recording.failed")
        assert failed and failed[-1].details["at_start"] is False
        b.wait_audit(c.name, "session.end")
        (s,) = b.store.list_sessions(user=c.name)
        assert s.end_reason == "recording-failed"
    finally:
        b.close()


def test_closed_recording_is_repacked_and_still_verifies(bastion: BastionHarness) -> None:
    from recorder import repack_note

    c = bastion.contractor()
    bastion.grant(c, "web2")
    r = c.ssh("for i in 1 2 3 4 5 6 7 8; do seq 1 3000; sleep 0.35; done", target="web2")
    assert r.returncode == 0, r.stderr
    rows = bastion.wait_audit(c.name, "recording.repacked")
    assert rows, "the recording was not repacked"
    sid = rows[-1].details["session"]
    row = bastion.store.get_session(sid)
    assert row is not None and row.final_hash == rows[-1].details["final_hash"]
    path = _recording_path(bastion, sid)
    note = repack_note(path)
    assert note is not None and note.from_final_hash == rows[-1].details["old_final_hash"]
    with RecordingReader.open(path) as reader:
        out = b"".join(e.data for e in reader.events() if isinstance(e, Output))
    assert out == r.stdout
    v = bastion.cli("verify", sid)
    assert v.returncode == 0, v.stdout + v.stderr


def test_search_indexes_exec_commands_but_not_transferred_data(
    bastion: BastionHarness, tmp_path: Path
) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1", options=("scp",))
    r = c.ssh("echo indexed-exec-marker-77", target="web1")
    assert r.returncode == 0, r.stderr
    src = tmp_path / "payload.txt"
    src.write_text("systemctl restart not-a-command-marker-88\n" * 50)
    scp = subprocess.run(
        [
            "scp",
            *c.ssh_args(),
            "-P",
            str(bastion.port),
            str(src),
            f"{c.login_name('web1')}@127.0.0.1:{tmp_path}/copy.txt",
        ],
        capture_output=True,
        env=c.ssh_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert scp.returncode == 0, scp.stderr
    # both sessions (the exec, then the scp) ended and were indexed
    wait_until(lambda: len(bastion.audit(c.name, "session.end")) >= 2, 10, "2 session.end")
    hits = bastion.store.search_commands("indexed-exec-marker-77", user=c.name)
    assert [h.text for h in hits] == ["echo indexed-exec-marker-77"]
    assert bastion.store.search_commands("not-a-command-marker-88", user=c.name) == []
