"""``bastion sessions``, ``verify`` and ``export`` on real recordings and a real SQLite store.

No SSH: the fixture writes recordings with the recorder exactly as a node does
(signed with the node's key from ``bastion init``) and stores the session rows.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import main
from bastion.cli_node import init_dir
from bastion.commands.recordings import EXIT_ALTERED, EXIT_MISSING, EXIT_TRUNCATED
from bastion.config import Config
from bastion.ids import new_session_id
from bastion.recording import extract_session_commands
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import CertificateRecord, Role, SessionRecord, TargetKind
from recorder import LocalStorage, RecordingReader, RecordingSummary, RecordingWriter
from recorder.keys import load_signing_key

# What session A's recording holds, in order: (seconds after start, writer method, args).
# Chunks are cut after the marked steps so tampering can be located by seq.
EURO = "€".encode()  # e2 82 ac: split across two output calls below
SCRIPT_A: list[tuple[float, str, tuple[Any, ...]]] = [
    (0.0, "resize", (120, 40)),
    (0.1, "output", (b"$ ",)),
    (1.0, "input", (b"systemctl restart nginx\r",)),
    (1.5, "output", (b"restarting " + EURO[:2],)),
    (1.6, "flush", ()),  # end of chunk 1
    (2.0, "output", (EURO[2:] + b" done\r\n",)),
    (2.5, "output", (b"bin \xff\xfe\x00 end\r\n$ ",)),  # not UTF-8
    (2.6, "flush", ()),  # end of chunk 2
    (3.0, "marker", ("grant ends in 5 minutes",)),
    (4.0, "input", (b"exit\r",)),
    (4.2, "output", (b"logout\r\n",)),
    (4.3, "exit", (0,)),
]
OUTPUT_A = b"".join(args[0] for _, op, args in SCRIPT_A if op == "output")
SCRIPT_B: list[tuple[float, str, tuple[Any, ...]]] = [
    (0.0, "resize", (80, 24)),
    (0.5, "input", (b"cat /etc/passwd\r",)),
    (0.7, "output", (b"root:x:0:0:root:/root:/bin/bash\r\n",)),
    (1.0, "exit", (0,)),
]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def record(config: Config, sid: str, started_at: float, script: list[Any], meta: Any) -> Any:
    """Write a recording the way a node does; returns the writer (closed unless aborted)."""
    clock = FakeClock()
    t0 = clock.now
    writer = RecordingWriter.create(
        LocalStorage(config.recordings_dir),
        sid,
        meta,
        load_signing_key(config.recording_signing_key),
        clock=clock,
        wall_clock=lambda: started_at,
    )
    for at, op, args in script:
        clock.now = t0 + at
        getattr(writer, op)(*args)
    return writer


@dataclass
class Node:
    """A bastion directory with three sessions: A and B ended, C live."""

    dir: Path
    config: Config
    a: str
    b: str
    c: str
    a_summary: RecordingSummary
    b_summary: RecordingSummary
    started_a: float

    @property
    def cfg(self) -> str:
        return str(self.config.path)

    def path_of(self, sid: str) -> Path:
        s = self.store_session(sid)
        assert s.recording is not None
        return LocalStorage(self.config.recordings_dir).path_of(s.recording)

    def store_session(self, sid: str) -> SessionRecord:
        with _store(self.config) as store:
            s = store.get_session(sid)
        assert s is not None
        return s

    @property
    def pub(self) -> Path:
        return self.config.recording_signing_key.with_name("recording_signing_key.pub")


def _store(config: Config) -> Store:
    return open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))


def _session(store: Store, sid: str, user: Any, target: Any, started: float, **kw: Any) -> None:
    store.start_session(
        SessionRecord(
            id=sid, user_id=user.id, user_name=user.name, target_id=target.id,
            target_name=target.name, grant_id=None, node="n1", protocol="ssh", login="deploy",
            client_addr="192.0.2.7:5555", started_at=started, **kw,
        )
    )  # fmt: skip


@pytest.fixture()
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    monkeypatch.delenv("BASTION_SECRET_KEY", raising=False)
    monkeypatch.delenv("BASTION_STATE_URL", raising=False)
    config = init_dir(tmp_path / "node", "127.0.0.1:0", None, "n1")
    now = time.time()
    started_a, started_b, started_c = now - 7200, now - 3000, now - 60
    a, b, c = new_session_id(), new_session_id(), new_session_id()
    with _store(config) as store:
        alice = store.add_user("alice", Role.CONTRACTOR, [], None, now - 86400)
        bob = store.add_user("bob", Role.CONTRACTOR, [], None, now - 86400)
        web1, db1 = (
            store.add_target(
                name=name, kind=TargetKind.SSH, host="10.0.0.5", port=22, logins=["deploy"],
                principal=f"bastion-{name}", host_keys=["ssh-ed25519 AAAAhost"], now=now - 86400,
            )
            for name in ("web1", "db1")
        )  # fmt: skip
        summaries = []
        for sid, user, target, started, script in (
            (a, alice, web1, started_a, SCRIPT_A),
            (b, bob, db1, started_b, SCRIPT_B),
        ):
            location = LocalStorage(config.recordings_dir).location_for(sid, started)
            _session(store, sid, user, target, started, recording=location)
            meta = {"user": user.name, "target": target.name, "protocol": "ssh"}
            summary = record(config, sid, started, script, meta).close("client disconnected")
            assert summary.location == location
            path = LocalStorage(config.recordings_dir).path_of(location)
            store.add_session_commands(sid, extract_session_commands(str(path)))
            store.end_session(
                sid, ended_at=started + summary.duration, reason="client disconnected",
                bytes_in=123, bytes_out=4567, events=summary.events,
                final_hash=summary.final_hash, final_signature=summary.signature,
                recording=summary.location,
            )  # fmt: skip
            summaries.append(summary)
        # C is live: its recording is open (no trailer yet).
        location = LocalStorage(config.recordings_dir).location_for(c, started_c)
        _session(store, c, alice, db1, started_c, recording=location)
        live = record(config, c, started_c, SCRIPT_B[:3] + [(0.8, "flush", ())], {})
        store.record_certificate(
            CertificateRecord(
                serial=4242, key_id=f"alice@web1 session {a}", principals=("bastion-web1",),
                valid_after=started_a - 30, valid_before=started_a + 90, session_id=a,
                user_id=alice.id, target_id=web1.id, issued_at=started_a,
            )
        )  # fmt: skip
        store.append_audit("alice", "session.start", "web1", {"session": a}, started_a)
        store.append_audit("bob", "session.start", "db1", {"session": b}, started_b)
        store.append_audit("alice", "session.end", "web1", {"session": a, "bytes": 9}, now)
    yield Node(tmp_path / "node", config, a, b, c, summaries[0], summaries[1], started_a)
    live.abort()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def chunk_offset(path: Path, seq: int) -> int:
    with RecordingReader.open(path) as reader:
        return next(e.offset for e in reader.index if e.seq == seq)


# --------------------------------------------------------------------------- sessions


def test_list_shows_sessions_newest_first(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sessions", "list", "--config", node.cfg)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "USER", "TARGET", "PROTOCOL"]
    assert [line.split()[0] for line in lines[1:]] == [node.c, node.b, node.a]
    row_a = lines[3]
    assert "alice" in row_a and "web1" in row_a and "deploy" in row_a
    assert "4s" in row_a and "client disconnected" in row_a  # duration, end reason
    assert "123B/4.5K" in row_a and " 10 " in row_a  # bytes in/out, events
    assert "live" in lines[1]

    code, out, _ = run(capsys, "sessions", "list", "--live", "--config", node.cfg)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [node.c]
    code, out, _ = run(capsys, "sessions", "list", "--user", "bob", "--config", node.cfg)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [node.b]
    code, out, _ = run(capsys, "sessions", "list", "--since", "1h", "--config", node.cfg)
    assert [line.split()[0] for line in out.splitlines()[1:]] == [node.c, node.b]


def test_list_json(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "sessions", "list", "--target", "web1", "--json", "--config", node.cfg
    )
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [node.a]
    assert rows[0]["final_hash"] == node.a_summary.final_hash
    assert rows[0]["events"] == node.a_summary.events
    assert (rows[0]["bytes_in"], rows[0]["bytes_out"]) == (123, 4567)


def test_show_has_row_certificates_audit_and_verdict(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "sessions", "show", node.a, "--config", node.cfg)
    assert code == 0
    assert f"session:       {node.a}" in out
    assert "serial 4242" in out and f"alice@web1 session {node.a}" in out
    assert "audit (2):" in out  # bob's row for session B is not shown
    assert "session.start" in out and "session.end" in out
    assert node.a_summary.location in out
    assert "verify:       intact" in out

    code, out, _ = run(capsys, "sessions", "show", node.a, "--json", "--config", node.cfg)
    data = json.loads(out)
    assert data["session"]["id"] == node.a
    assert [c["serial"] for c in data["certificates"]] == [4242]
    assert [e["action"] for e in data["audit"]] == ["session.start", "session.end"]
    assert data["recording"]["location"] == node.a_summary.location
    assert data["recording"]["verify"]["status"] == "intact"

    flip_byte(node.path_of(node.a), chunk_offset(node.path_of(node.a), 2) + 80)
    code, out, _ = run(capsys, "sessions", "show", node.a, "--config", node.cfg)
    assert code == 0 and "verify:       altered (first bad chunk seq 2" in out


def test_show_unknown_session(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sessions", "show", "nope", "--config", node.cfg)
    assert code == 1 and "no session nope" in err


def test_search_finds_the_session_that_ran_a_command(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "sessions", "search", "SYSTEMCTL", "--config", node.cfg)
    assert code == 0 and out == ""
    assert "the search index is empty; run 'bastion reindex'" in err
    code, _, err = run(capsys, "reindex", "--config", node.cfg)
    assert code == 0 and "indexed 2 session(s), 0 failed" in err  # C is live: not yet
    code, out, err = run(capsys, "sessions", "search", "SYSTEMCTL", "--config", node.cfg)
    assert code == 0
    assert out.count("\n") == 1
    assert node.a in out and "alice" in out and "web1" in out
    assert "commands" in out and "systemctl restart nginx" in out
    assert "1 hit(s) in 1 session(s)" in err
    code, out, err = run(capsys, "sessions", "search", "restarting €", "--config", node.cfg)
    assert "output" in out and "restarting € done" in out  # as displayed: the € made whole

    code, out, _ = run(
        capsys, "sessions", "search", "passwd", "--user", "bob", "--json", "--config", node.cfg
    )
    hits = json.loads(out)
    assert [(h["session_id"], h["text"]) for h in hits] == [(node.b, "cat /etc/passwd")]
    assert abs(hits[0]["at"] - (node.started_a + 4200 + 0.5)) < 5  # B started 4200 s after A
    code, out, _ = run(
        capsys, "sessions", "search", "passwd", "--user", "alice", "--json", "--config", node.cfg
    )
    assert json.loads(out) == []


# ----------------------------------------------------------------------------- verify


def test_verify_intact_by_session_and_by_file(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "verify", node.a, "--config", node.cfg)
    assert code == 0 and out.splitlines()[0] == "intact"
    path = str(node.path_of(node.a))
    code, out, _ = run(capsys, "verify", path, "--key", str(node.pub))
    assert code == 0 and out.splitlines()[0] == "intact"
    code, out, _ = run(capsys, "verify", node.a, "--json", "--config", node.cfg)
    data = json.loads(out)
    assert data["status"] == "intact" and data["exit_code"] == 0
    assert data["detail"]["final_hash"] == node.a_summary.final_hash


def test_flipped_byte_is_altered_and_located(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    path = node.path_of(node.a)
    flip_byte(path, chunk_offset(path, 2) + 80)  # inside chunk 2's zstd frame
    code, out, _ = run(capsys, "verify", node.a, "--config", node.cfg)
    assert code == EXIT_ALTERED
    first = out.splitlines()[0]
    assert first.startswith("altered (first bad chunk seq 2 at t=2.000s")
    assert "hash mismatch" in first
    code, out, _ = run(capsys, "verify", str(path), "--key", str(node.pub), "--json")
    data = json.loads(out)
    assert code == EXIT_ALTERED and data["status"] == "altered"
    assert data["detail"]["bad_seq"] == 2


def test_truncated_file_is_truncated_and_the_store_catches_the_cut(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    path = node.path_of(node.a)
    with open(path, "r+b") as f:
        f.truncate(chunk_offset(path, 3))  # chunks 1 and 2 remain
    code, out, _ = run(capsys, "verify", str(path), "--key", str(node.pub))
    assert code == EXIT_TRUNCATED
    assert out.splitlines()[0].startswith("truncated (complete up to t=2.500s")
    assert "seq 2)" in out.splitlines()[0]
    # By session id the stored final hash says the end is missing: not just a crash.
    code, out, _ = run(capsys, "verify", node.a, "--config", node.cfg)
    assert code == EXIT_ALTERED and "end was cut off" in out


def test_swapped_recording_is_caught_by_the_stored_hash(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    path_a = node.path_of(node.a)
    # Another session's validly signed recording put in A's place.
    shutil.copyfile(node.path_of(node.b), path_a)
    code, out, _ = run(capsys, "verify", node.a, "--config", node.cfg)
    assert code == EXIT_ALTERED and node.b in out
    # A re-made recording with A's own id, signed by the real key: only the hash differs.
    path_a.unlink()
    remade = record(node.config, node.a, node.started_a, SCRIPT_B, {}).close("forged")
    assert Path(node.config.recordings_dir / remade.location) == path_a
    code, out, _ = run(capsys, "verify", str(path_a), "--key", str(node.pub))
    assert code == 0  # on its own the file is a fine recording ...
    code, out, _ = run(capsys, "verify", node.a, "--config", node.cfg)
    assert code == EXIT_ALTERED  # ... but not the one the bastion stored
    assert f"does not match the expected {node.a_summary.final_hash}" in out
    code, out, _ = run(
        capsys,
        "verify",
        str(path_a),
        "--key",
        str(node.pub),
        "--expect-hash",
        node.a_summary.final_hash,
    )
    assert code == EXIT_ALTERED


def test_live_missing_and_unknown(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify", node.c, "--config", node.cfg)
    assert code == EXIT_TRUNCATED and "the session is live" in out
    node.path_of(node.b).unlink()
    code, out, _ = run(capsys, "verify", node.b, "--config", node.cfg)
    assert code == EXIT_MISSING and out.startswith("missing")
    code, _, err = run(capsys, "verify", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--config", node.cfg)
    assert code == 1 and "neither a recording file nor a known session" in err


def test_wrong_key_is_altered(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = init_dir(tmp_path / "other", "127.0.0.1:0", None, "n2")
    other_pub = other.recording_signing_key.with_name("recording_signing_key.pub")
    code, out, _ = run(capsys, "verify", str(node.path_of(node.a)), "--key", str(other_pub))
    assert code == EXIT_ALTERED and "the recording names signing key" in out


def test_verify_a_copy_without_any_bastion_config(node: Node, tmp_path: Path) -> None:
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copyfile(node.path_of(node.a), auditor / "copy.bastrec")
    shutil.copyfile(node.pub, auditor / "recording_signing_key.pub")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bastion", "verify", "copy.bastrec", *extra],
            cwd=auditor,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert not (auditor / "bastion.toml").exists()
    done = verify("--key", "recording_signing_key.pub")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "intact"
    done = verify("--key", "recording_signing_key.pub", "--expect-hash", "00" * 32)
    assert done.returncode == EXIT_ALTERED, done.stderr
    done = verify()  # no key and no config: a helpful error, not a traceback
    assert done.returncode == 1 and "--key" in done.stderr and "Traceback" not in done.stderr
    flip_byte(auditor / "copy.bastrec", chunk_offset(auditor / "copy.bastrec", 1) + 80)
    done = verify("--key", "recording_signing_key.pub")
    assert done.returncode == EXIT_ALTERED and "seq 1" in done.stdout


# ----------------------------------------------------------------------------- export


def asciinema_cat(cast: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``asciinema cat``: it insists on a controlling terminal (/dev/tty),
    so give it a fresh pty as one while its stdout stays a clean pipe."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    master, slave = os.openpty()
    try:
        return subprocess.run(
            ["asciinema", "cat", str(cast)],
            stdin=slave,
            capture_output=True,
            env={**os.environ, "HOME": str(home)},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
            timeout=60,
        )
    finally:
        os.close(slave)
        os.close(master)


def test_export_raw_is_the_recorded_output_byte_for_byte(
    node: Node, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    out = tmp_path / "a.raw"
    assert main(["export", node.a, "--format", "raw", "-o", str(out), "--config", node.cfg]) == 0
    assert out.read_bytes() == OUTPUT_A
    capsysbinary.readouterr()
    assert main(["export", str(node.path_of(node.a)), "--format", "raw"]) == 0
    assert capsysbinary.readouterr().out == OUTPUT_A


def test_export_asciicast_plays_in_asciinema(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cast = tmp_path / "a.cast"
    code, _, _ = run(
        capsys, "export", node.a, "--format", "asciicast", "-o", str(cast), "--config", node.cfg
    )
    assert code == 0
    lines = cast.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and (header["width"], header["height"]) == (120, 40)
    events = [json.loads(line) for line in lines[1:]]
    assert [t for t, _, _ in events] == sorted(t for t, _, _ in events)
    assert [0.1, "o", "$ "] in events and [1.0, "i", "systemctl restart nginx\r"] in events
    done = asciinema_cat(cast, tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")
    assert "restarting € done" in text  # the split character comes out whole
    assert "bin \ufffd\ufffd\x00 end" in text and "logout" in text
    # stdout export (what a pipe to asciinema gets) is the same document
    code, out, _ = run(capsys, "export", node.a, "--config", node.cfg)
    assert code == 0 and out == cast.read_text(encoding="utf-8")


def test_export_jsonl_has_every_event(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "export", node.a, "--format", "jsonl", "--config", node.cfg)
    assert code == 0
    header, *events = (json.loads(line) for line in out.splitlines())
    assert header["kind"] == "header" and header["session_id"] == node.a
    expected: list[tuple[float, str, Any]] = []
    for at, op, args in SCRIPT_A:
        if op == "flush":
            continue
        value: Any = args[0] if op in ("output", "input", "marker", "exit") else list(args)
        expected.append((at, op, value))

    def value_of(e: dict[str, Any]) -> Any:
        if e["kind"] in ("output", "input"):
            return base64.b64decode(e["b64"]) if "b64" in e else e["text"].encode()
        if e["kind"] == "resize":
            return [e["cols"], e["rows"]]
        if e["kind"] == "exit":
            return e["status"]
        return e["label"]

    assert [(e["t"], e["kind"], value_of(e)) for e in events] == expected
    assert len(events) == node.a_summary.events


def test_export_errors(node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node.path_of(node.b).unlink()
    code, _, err = run(capsys, "export", node.b, "--config", node.cfg)
    assert code == 1 and "missing" in err
    code, _, err = run(capsys, "export", str(tmp_path / "nothing.bastrec"))
    assert code == 1 and "no file" in err
    junk = tmp_path / "junk.bastrec"
    junk.write_bytes(b"not a recording")
    out = tmp_path / "out.cast"
    code, _, err = run(capsys, "export", str(junk), "-o", str(out))
    assert code == 1 and "not a readable bastion recording" in err and not out.exists()


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    out = capsys.readouterr().out
    for code in (EXIT_TRUNCATED, EXIT_ALTERED, EXIT_MISSING):
        assert f"  {code}  " in out
    assert "--key recording_signing_key.pub" in out
