"""Recordings in S3-compatible storage, against a real S3 API server (moto) and a real node.

The node writes to its spool as always; once a session ends, the uploader puts the
sealed file in the bucket, points the session row at ``s3://...`` and only then
removes the spool copy. A second node config (same state store, its own empty
spool) verifies, exports and replays from S3; an outage keeps everything in the
spool until the store is back; an object altered in the bucket fails ``verify``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.config import load_config
from bastion.control.client import ControlClient
from bastion.recording_files import ConfigOpener, RecordingFile, recording_file
from bastion.s3_config import S3Config
from bastion.s3store import RangedObject, S3Location, open_object, upload_recording
from bastion.store.models import Role, SessionRecord
from recorder import LocalStorage, RecordingReader, verify
from recorder.events import Output
from recorder.keys import key_id, load_public_key
from recorder.writer import RecordingWriter, WriterPolicy
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.player import PlayerScreen
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.s3 import BUCKET, REGION, MotoS3
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, s3_server: MotoS3) -> Iterator[BastionHarness]:
    """Node A: recordings go to s3://BUCKET/rec, retried at most 1 s apart."""
    harness = make_harness(
        Path(tmp_path_factory.mktemp("s3node")),
        overrides={'storage = "local"': s3_server.storage_config("rec", retry_max=1)},
    )
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module")
def node_b_config(node: BastionHarness) -> Path:
    """A second node's config: the same state store and keys, its own (empty) spool."""
    text = node.config.path.read_text()
    text = text.replace('dir = "recordings"', 'dir = "recordings-b"')
    path = node.dir / "node-b.toml"
    path.write_text(text)
    return path


def _cli(node: BastionHarness, config: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BASTION_ACTOR": "test-admin"},
    )
    return done.returncode, done.stdout, done.stderr


def _session_of(node: BastionHarness, who: Contractor) -> SessionRecord:
    def ended() -> SessionRecord | None:
        rows = node.store.list_sessions(user=who.name)
        return rows[0] if rows and rows[0].ended_at is not None else None

    row = wait_until(ended, 30, f"{who.name}'s session to end")
    assert row is not None
    return row


def _uploaded(node: BastionHarness, session_id: str, timeout: float = 30) -> SessionRecord:
    def moved() -> SessionRecord | None:
        row = node.store.get_session(session_id)
        return row if row is not None and (row.recording or "").startswith("s3://") else None

    row = wait_until(moved, timeout, f"session {session_id}'s recording in S3")
    assert row is not None
    return row


def _wait_for_log(node: BastionHarness, line: str) -> None:
    """Wait for ``line`` in the node's log; on failure, show the log's end."""
    try:
        wait_until(lambda: line in node.log(), 30, repr(line))
    except AssertionError as e:
        raise AssertionError(f"{e}; the node's log ends:\n{node.log()[-4000:]}") from None


def _spool_path(node: BastionHarness, session: SessionRecord, location: str) -> Path:
    return LocalStorage(node.config.recordings_dir).path_of(location)


def test_a_sealed_recording_is_uploaded_then_removed_from_the_spool(
    node: BastionHarness, s3_server: MotoS3
) -> None:
    who = node.contractor()
    node.grant(who, "web1")
    done = who.ssh("echo", "upload-$((6*7))", target="web1")
    assert b"upload-42" in done.stdout, done.stderr
    ended = _session_of(node, who)
    assert ended.recording is not None
    spool_location = ended.recording
    row = _uploaded(node, ended.id)
    loc = S3Location.parse(row.recording or "")
    assert loc.bucket == BUCKET
    assert loc.key == f"rec/{spool_location}"
    head = s3_server.client().head_object(Bucket=BUCKET, Key=loc.key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"]  # sent with the upload
    assert head["ContentLength"] > 0
    wait_until(
        lambda: not _spool_path(node, ended, spool_location).exists(),
        10,
        "the spool copy to be removed",
    )
    (audit,) = node.wait_audit("node", "recording.uploaded")[-1:]
    assert audit.details["session"] == ended.id
    assert audit.details["location"] == row.recording
    # The object is the sealed recording the row's final hash names.
    with recording_file(node.config, row.recording or "").open() as f:
        result = verify(f, load_public_key(str(node.config.recording_signing_key)), row.final_hash)
    assert result.status == "intact", result


def test_node_b_verifies_exports_and_replays_from_s3_with_node_a_spool_gone(
    node: BastionHarness, node_b_config: Path
) -> None:
    who = node.contractor()
    node.grant(who, "web1")
    pty = who.ssh_pty("web1")
    pty.sendline("echo from-b-$((50+5))")
    pty.expect("from-b-55")
    pty.sendline("exit")
    pty.expect(pexpect.EOF)
    session = _uploaded(node, _session_of(node, who).id)
    shutil.rmtree(node.config.recordings_dir)  # node A's spool: gone
    assert not load_config(node_b_config).recordings_dir.exists()

    code, out, err = _cli(node, node_b_config, "verify", session.id)
    assert code == 0, out + err
    assert out.splitlines()[0] == "intact"
    assert f"file: {session.recording}" in out

    code, out, err = _cli(node, node_b_config, "export", session.id, "--format", "raw")
    assert code == 0, err
    assert "from-b-55" in out

    code, out, err = _cli(node, node_b_config, "sessions", "show", session.id)
    assert code == 0, err
    assert "intact" in out

    # Indexing (again) from node B reads the object (A's spool is gone): the typed line
    # and the terminal's output are found. (Run here rather than waiting for the node's
    # background indexer, which may have indexed it from the spool already or not yet.)
    code, out, err = _cli(node, node_b_config, "reindex", "--again")
    assert code == 0, out + err
    code, out, err = _cli(node, node_b_config, "sessions", "search", "from-b-")
    assert code == 0, err
    assert session.id in out
    code, out, err = _cli(node, node_b_config, "sessions", "search", "from-b-55", "--in", "output")
    assert code == 0, err
    assert session.id in out and "0 hit" not in out

    # The console's player opens what the control API hands it the same way.
    source = recording_file(load_config(node_b_config), session.recording or "")
    assert isinstance(source, RecordingFile) and source.s3 is not None
    with source.open() as f, RecordingReader(f) as reader:
        shown = b"".join(e.data for e in reader.events() if isinstance(e, Output))
    assert b"from-b-55" in shown


def test_with_s3_down_mid_session_nothing_is_lost_and_it_uploads_when_back(
    node: BastionHarness, s3_server: MotoS3
) -> None:
    who = node.contractor()
    node.grant(who, "web1")
    pty = who.ssh_pty("web1")
    pty.sendline("echo before-outage-$((1+1))")
    pty.expect("before-outage-2")
    s3_server.stop()
    try:
        pty.sendline("echo during-outage-$((2+2))")
        pty.expect("during-outage-4")
        pty.sendline("exit")
        pty.expect(pexpect.EOF)
        ended = _session_of(node, who)
        assert ended.recording is not None and not ended.recording.startswith("s3://")
        spool = _spool_path(node, ended, ended.recording)
        _wait_for_log(node, f"session {ended.id}: upload attempt 2 failed")
        assert spool.exists()  # nothing deleted before the upload is confirmed
        code, out, err = _cli(node, node.config.path, "recordings", "pending")
        assert code == 0, err
        (line,) = [ln for ln in out.splitlines() if ln.startswith(ended.id)]
        assert "node=test-node" in line and ended.recording in line
        # The node keeps serving while the store is down.
        other = node.contractor()
        node.grant(other, "web1")
        assert b"still-serving" in other.ssh("echo", "still-serving", target="web1").stdout
        assert node.gauge("recordings_awaiting_upload") >= 1
    finally:
        s3_server.start()
    row = _uploaded(node, ended.id, timeout=60)
    wait_until(lambda: not spool.exists(), 10, "the spool copy to be removed")
    code, out, err = _cli(node, node.config.path, "recordings", "pending", "--json")
    assert code == 0, err
    assert ended.id not in out
    with recording_file(node.config, row.recording or "").open() as f:
        result = verify(f, load_public_key(str(node.config.recording_signing_key)), row.final_hash)
        f.seek(0)
        with RecordingReader(f) as reader:
            shown = b"".join(e.data for e in reader.events() if isinstance(e, Output))
    assert result.status == "intact", result
    assert b"before-outage-2" in shown and b"during-outage-4" in shown


def test_a_restarted_node_uploads_what_its_spool_still_holds(
    node: BastionHarness, s3_server: MotoS3
) -> None:
    """Sealed but not uploaded when the node stopped (the store was down): uploaded at
    the next start, with nothing else to trigger it."""
    who = node.contractor()
    node.grant(who, "web1")
    s3_server.stop()
    try:
        assert b"left-behind" in who.ssh("echo", "left-behind", target="web1").stdout
        ended = _session_of(node, who)
        assert ended.recording is not None and not ended.recording.startswith("s3://")
        _wait_for_log(node, f"session {ended.id}: upload attempt 1 failed")
        node.stop()
    finally:
        s3_server.start()
    spool = _spool_path(node, ended, ended.recording)
    assert spool.exists()
    row = node.store.get_session(ended.id)
    assert row is not None and row.recording == ended.recording  # still the spool's
    node.start()
    _uploaded(node, ended.id)
    wait_until(lambda: not spool.exists(), 10, "the spool copy to be removed")


def test_a_node_killed_while_uploading_loses_nothing(
    node: BastionHarness, s3_server: MotoS3
) -> None:
    """SIGKILL as the upload of a multi-part recording starts: whatever it cut (before,
    during or after the transfer), the spool copy or the object holds the recording,
    the next start finishes the job, and the result verifies."""
    who = node.contractor()
    node.grant(who, "web1")
    # ~20 MB of output that zstd cannot shrink much: several 5 MiB parts
    done = who.ssh("head -c 15000000 /dev/urandom | base64 -w 0; echo", target="web1")
    assert done.returncode == 0 and len(done.stdout) > 19_000_000, done.stderr
    ended = _session_of(node, who)
    assert node.proc is not None
    node.proc.kill()  # the uploader was handed the recording at session.end
    node.proc.wait()
    node.proc = None
    row = node.store.get_session(ended.id)
    assert row is not None and row.recording is not None
    if not row.recording.startswith("s3://"):  # not yet confirmed: the spool still has it
        assert _spool_path(node, ended, row.recording).exists()
    node.start()
    moved = _uploaded(node, ended.id, timeout=60)
    wait_until(
        lambda: not _spool_path(node, ended, ended.recording or "").exists(),
        20,
        "the spool copy to be removed",
    )
    with recording_file(node.config, moved.recording or "").open() as f:
        result = verify(
            f, load_public_key(str(node.config.recording_signing_key)), moved.final_hash
        )
    assert result.status == "intact", result


def test_an_object_altered_in_the_bucket_fails_verify(
    node: BastionHarness, s3_server: MotoS3
) -> None:
    who = node.contractor()
    node.grant(who, "web1")
    who.ssh("echo", "tamper-me-" + "x" * 200, target="web1")
    row = _uploaded(node, _session_of(node, who).id)
    loc = S3Location.parse(row.recording or "")
    pub = str(node.config.recording_signing_key) + ".pub"

    def auditor_verify() -> subprocess.CompletedProcess[str]:
        """An auditor with no bastion config: the URL, the public key and the stored hash."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env |= {"AWS_ENDPOINT_URL_S3": s3_server.url, "AWS_REGION": REGION}
        env["BASTION_CONFIG"] = str(node.dir / "no-such.toml")
        return subprocess.run(
            [sys.executable, "-m", "bastion", "verify", str(loc), "--key", pub,
             "--expect-hash", row.final_hash or ""],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip

    done = auditor_verify()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "intact"
    client = s3_server.client()
    data = bytearray(client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read())
    data[len(data) // 3] ^= 0x01
    client.put_object(Bucket=loc.bucket, Key=loc.key, Body=bytes(data))

    code, out, err = _cli(node, node.config.path, "verify", row.id)
    assert code == 4, out + err
    assert out.startswith("altered ("), out
    assert f"file: {row.recording}" in out
    done = auditor_verify()
    assert done.returncode == 4, done.stdout + done.stderr
    assert done.stdout.startswith("altered (")


def test_a_deleted_object_is_missing_and_an_unreachable_store_is_an_error(
    node: BastionHarness, s3_server: MotoS3
) -> None:
    """Missing is a verdict about the evidence; a store that cannot be asked is not one."""
    who = node.contractor()
    node.grant(who, "web1")
    who.ssh("echo", "deleted", target="web1")
    row = _uploaded(node, _session_of(node, who).id)
    loc = S3Location.parse(row.recording or "")
    s3_server.stop()
    try:
        code, out, err = _cli(node, node.config.path, "verify", row.id)
    finally:
        s3_server.start()
    assert code == 1, out + err
    assert f"cannot read {row.recording}" in err and "Could not connect" in err
    s3_server.client().delete_object(Bucket=loc.bucket, Key=loc.key)
    code, out, err = _cli(node, node.config.path, "verify", row.id)
    assert code == 5, out + err
    assert out.splitlines()[0] == f"missing (no object at {row.recording})"


def test_seeking_in_an_s3_recording_reads_only_what_it_needs(
    s3_server: MotoS3, tmp_path: Path
) -> None:
    """A 12 MiB recording of incompressible output, uploaded in parts: the last minute
    of it costs a few ranged GETs, not the object."""
    signing = Ed25519PrivateKey.generate()
    now = [1000.0]
    storage = LocalStorage(tmp_path / "spool")
    writer = RecordingWriter.create(
        storage,
        "ranged-1",
        {},
        signing,
        key_id(signing),
        clock=lambda: now[0],
        wall_clock=time.time,
        policy=WriterPolicy(chunk_bytes=64 * 1024),
    )
    for _ in range(200):  # 200 s of 60 KiB a second
        writer.output(os.urandom(60 * 1024))
        now[0] += 1.0
        writer.tick()
    summary = writer.close("done")
    path = storage.path_of(summary.location)
    size = path.stat().st_size
    assert size > 11 * 1024 * 1024

    config = S3Config(BUCKET, "ranged", s3_server.url, REGION, 1.0, 5 * 1024 * 1024)
    client = s3_server.client()
    loc = S3Location(BUCKET, config.key_for(summary.location))
    upload_recording(client, config, path, loc)
    head = client.head_object(Bucket=BUCKET, Key=loc.key)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: multipart

    f = open_object(client, loc)
    raw = f.raw
    assert isinstance(raw, RangedObject)
    with RecordingReader(f, owns_file=True) as reader:
        late = [e for e in reader.events(start=190.0) if isinstance(e, Output)]
        with RecordingReader.open(path) as local:
            assert late == [e for e in local.events(start=190.0) if isinstance(e, Output)]
        assert len(late) == 10
        # The header, the footer index and the last 5% of the time (about 0.7 MiB of
        # chunks) plus the read-ahead of each GET: a small part, never the whole object.
        assert raw.bytes_fetched < size // 5, (raw.bytes_fetched, size)
        assert raw.requests < 20, raw.requests


async def test_the_console_replays_an_uploaded_recording(
    node: BastionHarness, node_b_config: Path
) -> None:
    """The control API names the object; the console's player reads it from S3."""
    who = node.contractor()
    node.grant(who, "web1")
    who.ssh("echo", "console-$((3*3))", target="web1")
    session = _uploaded(node, _session_of(node, who).id)
    admin = node.contractor("adm", Role.ADMIN)
    async with await ControlClient.connect(node.control_socket(), user=admin.name) as client:
        path = await client.recording_path(session.id)
    assert path == session.recording

    app = ConsoleApp(
        Start("replay", path=path),
        clock=ManualClock(),
        opener=ConfigOpener(load_config(node_b_config)),
    )
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, PlayerScreen)
        for _ in range(100):
            await pilot.pause(0.05)
            if screen.indexed or screen.problem:
                break
        assert screen.problem == ""
        assert screen.indexed
        assert screen.player is not None
        assert screen.player.reader.header.session_id == session.id
        await pilot.press("q")
