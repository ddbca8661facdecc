"""SftpAuditor: hand-built packets, Hypothesis framing/fuzz properties, real OpenSSH peers.

The integration tests run the real OpenSSH ``sftp`` and ``scp`` clients with
``-S fake_ssh``: a small relay script that starts ``/usr/lib/openssh/sftp-server``
(or, for an exec request, the command under ``sh -c``) and records both plaintext
directions in the order it forwards them, the way the bastion sees a channel.
``test_scp_audit`` reuses :func:`run_with_fake_ssh` and :func:`read_transcript`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.ssh.sftp_audit import (
    MAX_PATH_BYTES,
    FileEvent,
    SftpAuditError,
    SftpAuditor,
    decode_path,
)

# -- packet builders -------------------------------------------------------------

READ, WRITE, APPEND, CREAT, TRUNC = 0x01, 0x02, 0x04, 0x08, 0x10


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def s(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return u32(len(raw)) + raw


def packet(ptype: int, *fields: bytes) -> bytes:
    body = bytes([ptype]) + b"".join(fields)
    return u32(len(body)) + body


def init() -> bytes:
    return packet(1, u32(3))


def version(number: int = 3) -> bytes:
    return packet(2, u32(number), s("posix-rename@openssh.com"), s("1"))


def open_(rid: int, path: bytes | str, pflags: int) -> bytes:
    return packet(3, u32(rid), s(path), u32(pflags), u32(0))


def close_(rid: int, handle: bytes) -> bytes:
    return packet(4, u32(rid), s(handle))


def read(rid: int, handle: bytes, offset: int = 0, length: int = 32768) -> bytes:
    return packet(5, u32(rid), s(handle), u64(offset), u32(length))


def write(rid: int, handle: bytes, data: bytes, offset: int = 0) -> bytes:
    return packet(6, u32(rid), s(handle), u64(offset), s(data))


def setstat(rid: int, path: str, mode: int) -> bytes:
    return packet(9, u32(rid), s(path), u32(0x4), u32(mode))


def fsetstat(rid: int, handle: bytes, mtime: int) -> bytes:
    return packet(10, u32(rid), s(handle), u32(0x8), u32(mtime), u32(mtime))


def opendir(rid: int, path: str) -> bytes:
    return packet(11, u32(rid), s(path))


def readdir(rid: int, handle: bytes) -> bytes:
    return packet(12, u32(rid), s(handle))


def remove(rid: int, path: bytes | str) -> bytes:
    return packet(13, u32(rid), s(path))


def mkdir(rid: int, path: str) -> bytes:
    return packet(14, u32(rid), s(path), u32(0))


def rmdir(rid: int, path: str) -> bytes:
    return packet(15, u32(rid), s(path))


def stat(rid: int, path: str) -> bytes:
    return packet(17, u32(rid), s(path))


def rename(rid: int, old: str, new: str) -> bytes:
    return packet(18, u32(rid), s(old), s(new))


def symlink(rid: int, target: str, link: str) -> bytes:
    return packet(20, u32(rid), s(target), s(link))


def extended(rid: int, name: str, *fields: bytes) -> bytes:
    return packet(200, u32(rid), s(name), *fields)


def status(rid: int, code: int = 0, message: str = "") -> bytes:
    return packet(101, u32(rid), u32(code), s(message), s(""))


def handle_reply(rid: int, handle: bytes) -> bytes:
    return packet(102, u32(rid), s(handle))


def data_reply(rid: int, payload: bytes) -> bytes:
    return packet(103, u32(rid), s(payload))


def name_reply(rid: int, count: int) -> bytes:
    entries = b"".join(s(f"f{i}") + s(f"-rw f{i}") + u32(0) for i in range(count))
    return packet(104, u32(rid), u32(count), entries)


Segment = tuple[str, bytes]  # ("c" client->server | "s" server->client, bytes)


def feed(auditor: SftpAuditor, segments: Iterable[Segment]) -> list[FileEvent]:
    events: list[FileEvent] = []
    for side, chunk in segments:
        feeder = auditor.client_data if side == "c" else auditor.server_data
        events.extend(feeder(chunk))
    return events


def run(segments: Sequence[Segment], *, flush: bool = True) -> list[FileEvent]:
    auditor = SftpAuditor()
    events = feed(auditor, [("c", init()), ("s", version()), *segments])
    return events + auditor.close() if flush else events


def merge_sides(segments: Sequence[Segment]) -> list[Segment]:
    """Join consecutive same-direction segments: still a causal order."""
    merged: list[Segment] = []
    for side, chunk in segments:
        if merged and merged[-1][0] == side:
            merged[-1] = (side, merged[-1][1] + chunk)
        else:
            merged.append((side, chunk))
    return merged


def split_segments(segments: Sequence[Segment], rng: random.Random) -> list[Segment]:
    """Cut each direction's run at random points, keeping the causal order."""
    pieces: list[Segment] = []
    for side, chunk in merge_sides(segments):
        cuts = sorted(rng.randrange(len(chunk) + 1) for _ in range(rng.randrange(6)))
        for start, end in zip([0, *cuts], [*cuts, len(chunk)], strict=True):
            pieces.append((side, chunk[start:end]))
    return pieces


# -- unit tests --------------------------------------------------------------------


def test_upload_counts_acknowledged_write_bytes() -> None:
    h = b"h1"
    events = run(
        [
            ("c", open_(1, "/srv/a.bin", WRITE | CREAT | TRUNC)),
            ("s", handle_reply(1, h)),
            ("c", write(2, h, b"x" * 100) + write(3, h, b"y" * 50, 100)),
            ("s", status(2) + status(3)),
            ("c", close_(4, h)),
            ("s", status(4)),
        ]
    )
    assert events == [FileEvent("upload", "/srv/a.bin", 150, True)]


def test_download_counts_data_replies_until_eof() -> None:
    h = b"\x00\x00\x00\x07"
    events = run(
        [
            ("c", open_(1, "/etc/hosts", READ)),
            ("s", handle_reply(1, h)),
            ("c", read(2, h) + read(3, h, 32768) + read(4, h, 65536)),
            ("s", data_reply(2, b"a" * 32768) + data_reply(3, b"b" * 10) + status(4, 1, "EOF")),
            ("c", close_(5, h)),
            ("s", status(5)),
        ]
    )
    assert events == [FileEvent("download", "/etc/hosts", 32778, True)]


def test_read_write_open_with_only_writes_is_an_upload() -> None:
    events = run(
        [
            ("c", open_(1, "f", READ | WRITE)),
            ("s", handle_reply(1, b"h")),
            ("c", write(2, b"h", b"abc")),
            ("s", status(2)),
            ("c", close_(3, b"h")),
            ("s", status(3)),
        ]
    )
    assert events == [FileEvent("upload", "f", 3, True)]


def test_reads_and_writes_on_one_handle_give_both_events() -> None:
    events = run(
        [
            ("c", open_(1, "f", READ | WRITE)),
            ("s", handle_reply(1, b"h")),
            ("c", write(2, b"h", b"abc") + read(3, b"h")),
            ("s", status(2) + data_reply(3, b"abcd")),
            ("c", close_(4, b"h")),
            ("s", status(4)),
        ]
    )
    assert events == [FileEvent("upload", "f", 3, True), FileEvent("download", "f", 4, True)]


def test_empty_upload_and_idle_open() -> None:
    events = run(
        [
            ("c", open_(1, "empty", WRITE | CREAT | TRUNC) + open_(2, "peek", READ)),
            ("s", handle_reply(1, b"h1") + handle_reply(2, b"h2")),
            ("c", close_(3, b"h1") + close_(4, b"h2")),
            ("s", status(3) + status(4)),
        ]
    )
    assert events == [
        FileEvent("upload", "empty", 0, True),
        FileEvent("open", "peek", 0, True, "flags read"),
    ]


def test_failed_open_write_and_close_are_not_ok() -> None:
    events = run(
        [
            ("c", open_(1, "/root/x", WRITE | CREAT)),
            ("s", status(1, 3, "Permission denied")),
            ("c", open_(2, "/full/y", WRITE | CREAT)),
            ("s", handle_reply(2, b"h")),
            ("c", write(3, b"h", b"1234") + write(4, b"h", b"5678", 4)),
            ("s", status(3) + status(4, 4, "No space left on device")),
            ("c", close_(5, b"h")),
            ("s", status(5)),
            ("c", open_(6, "z", READ)),
            ("s", handle_reply(6, b"h")),
            ("c", read(7, b"h") + close_(8, b"h")),
            ("s", data_reply(7, b"zz") + status(8, 4, "close failed")),
        ]
    )
    assert events == [
        FileEvent(
            "open", "/root/x", 0, False, "PERMISSION_DENIED: Permission denied (flags write,creat)"
        ),
        FileEvent("upload", "/full/y", 4, False, "write failed: FAILURE: No space left on device"),
        FileEvent("download", "z", 2, False, "FAILURE: close failed"),
    ]


def test_path_operations_report_on_status() -> None:
    events = run(
        [
            ("c", remove(1, "/tmp/a") + mkdir(2, "/tmp/d") + rmdir(3, "/tmp/e")),
            ("s", status(1) + status(2, 4, "exists") + status(3, 2, "No such file")),
            ("c", rename(4, "/tmp/o", "/tmp/n") + symlink(5, "/etc/passwd", "/tmp/l")),
            ("s", status(5) + status(4)),  # replies may come in any order
            ("c", setstat(6, "/tmp/o", 0o100600) + stat(7, "/tmp/o")),
            ("s", status(6) + packet(105, u32(7), u32(0))),
        ]
    )
    assert events == [
        FileEvent("remove", "/tmp/a", 0, True),
        FileEvent("mkdir", "/tmp/d", 0, False, "FAILURE: exists"),
        FileEvent("rmdir", "/tmp/e", 0, False, "NO_SUCH_FILE: No such file"),
        FileEvent("symlink", "/tmp/l", 0, True, "-> /etc/passwd"),
        FileEvent("rename", "/tmp/o", 0, True, "-> /tmp/n"),
        FileEvent("setstat", "/tmp/o", 0, True, "mode=0600"),
    ]


def test_openssh_extensions_and_fsetstat() -> None:
    events = run(
        [
            ("c", extended(1, "posix-rename@openssh.com", s("/a"), s("/b"))),
            ("c", extended(2, "hardlink@openssh.com", s("/b"), s("/c"))),
            ("c", extended(3, "lsetstat@openssh.com", s("/c"), u32(0x2), u32(0), u32(0))),
            ("c", extended(4, "statvfs@openssh.com", s("/"))),
            ("s", status(1) + status(2) + status(3) + packet(201, u32(4), b"\0" * 88)),
            ("c", open_(5, "/d", WRITE | CREAT)),
            ("s", handle_reply(5, b"h")),
            ("c", fsetstat(6, b"h", 1700000000) + close_(7, b"h")),
            ("s", status(6) + status(7)),
        ]
    )
    assert events == [
        FileEvent("rename", "/a", 0, True, "-> /b"),
        FileEvent("symlink", "/c", 0, True, "hard link -> /b"),
        FileEvent("setstat", "/c", 0, True, "uid=0 gid=0"),
        FileEvent("setstat", "/d", 0, True, "atime=1700000000 mtime=1700000000"),
        FileEvent("upload", "/d", 0, True),
    ]


def test_server_side_copy_is_reported_as_such() -> None:
    copy = extended(3, "copy-data@openssh.com", s(b"src"), u64(0), u64(1000), s(b"dst"), u64(0))
    events = run(
        [
            ("c", open_(1, "/a", READ) + open_(2, "/b", WRITE | CREAT | TRUNC)),
            ("s", handle_reply(1, b"src") + handle_reply(2, b"dst")),
            ("c", copy),
            ("s", status(3)),
            ("c", close_(4, b"src") + close_(5, b"dst")),
            ("s", status(4) + status(5)),
        ]
    )
    assert events == [
        FileEvent("open", "/a", 0, True, "server-side copy source"),
        FileEvent("open", "/b", 1000, True, "server-side copy from /a"),
    ]


def test_listdir_counts_entries() -> None:
    events = run(
        [
            ("c", opendir(1, "/home") + opendir(2, "/nope")),
            ("s", handle_reply(1, b"d") + status(2, 2, "No such file")),
            ("c", readdir(3, b"d")),
            ("s", name_reply(3, 3)),
            ("c", readdir(4, b"d")),
            ("s", status(4, 1)),
            ("c", close_(5, b"d")),
            ("s", status(5)),
        ]
    )
    assert events == [
        FileEvent("listdir", "/nope", 0, False, "NO_SUCH_FILE: No such file"),
        FileEvent("listdir", "/home", 0, True, "3 entries"),
    ]


def test_close_flushes_open_handles_and_unanswered_requests() -> None:
    events = run(
        [
            ("c", open_(1, "/up", WRITE | CREAT)),
            ("s", handle_reply(1, b"h")),
            ("c", write(2, b"h", b"12345")),
            ("s", status(2)),
            ("c", write(3, b"h", b"678") + close_(4, b"h") + remove(5, "/gone")),
        ]
    )
    assert events == [
        FileEvent("upload", "/up", 5, False, "unclosed"),
        FileEvent("remove", "/gone", 0, False, "no reply"),
    ]
    auditor = SftpAuditor()
    auditor.close()
    with pytest.raises(SftpAuditError, match="closed"):
        auditor.client_data(init())


def test_unknown_ids_handles_and_types_are_ignored() -> None:
    events = run(
        [
            ("s", status(99) + data_reply(98, b"x") + packet(150, b"vendor")),
            ("c", read(1, b"never-opened") + write(2, b"nope", b"x") + close_(3, b"nope")),
            ("s", status(1) + status(2) + status(3)),
            ("c", packet(99, u32(4))),
        ]
    )
    assert events == []


def test_paths_decode_with_backslashreplace_and_are_capped() -> None:
    assert decode_path("café".encode()) == "café"
    assert decode_path(b"bad\xff\xfename") == "bad\\xff\\xfename"
    long = decode_path(b"a" * (MAX_PATH_BYTES + 10))
    assert long == "a" * MAX_PATH_BYTES + "...(truncated)"
    events = run([("c", remove(1, b"/tmp/\xff")), ("s", status(1))])
    assert events == [FileEvent("remove", "/tmp/\\xff", 0, True)]
    events[0].path.encode("utf-8")  # loggable


def test_byte_at_a_time_matches_whole() -> None:
    segments = [
        ("c", init()),
        ("s", version()),
        ("c", open_(1, "/srv/a.bin", WRITE | CREAT | TRUNC)),
        ("s", handle_reply(1, b"h1")),
        ("c", write(2, b"h1", bytes(range(256)) * 40) + close_(3, b"h1")),
        ("s", status(2) + status(3)),
    ]
    whole = feed(SftpAuditor(), segments)
    auditor = SftpAuditor()
    single = feed(
        auditor, [(side, chunk[i : i + 1]) for side, chunk in segments for i in range(len(chunk))]
    )
    assert single == whole == [FileEvent("upload", "/srv/a.bin", 10240, True)]


@pytest.mark.parametrize(
    ("side", "data", "message"),
    [
        ("c", u32(300 * 1024) + b"\x03", "packet length"),
        ("s", u32(0), "packet length"),
        ("s", version(4), "version 4"),
        ("c", packet(3, u32(1), s("x")), "runs past the end"),
        ("c", packet(101, u32(1), u32(0)), "client sent a server packet"),
        ("s", packet(3, u32(1)), "server sent a client packet"),
    ],
)
def test_hostile_input_raises_audit_error(side: str, data: bytes, message: str) -> None:
    auditor = SftpAuditor()
    feeder = auditor.client_data if side == "c" else auditor.server_data
    with pytest.raises(SftpAuditError, match=message):
        feeder(data)
    with pytest.raises(SftpAuditError, match="auditing stopped"):
        auditor.client_data(init())


def test_reply_type_must_match_request() -> None:
    auditor = SftpAuditor()
    feed(auditor, [("c", open_(1, "f", WRITE)), ("s", handle_reply(1, b"h"))])
    auditor.client_data(write(2, b"h", b"x"))
    with pytest.raises(SftpAuditError, match="DATA reply to a write request"):
        auditor.server_data(data_reply(2, b"x"))
    auditor = SftpAuditor()
    auditor.client_data(open_(1, "f", READ))
    with pytest.raises(SftpAuditError, match="handle of 300 bytes"):
        auditor.server_data(handle_reply(1, b"h" * 300))


def test_caps_on_pending_requests_and_handles() -> None:
    auditor = SftpAuditor(max_pending=2)
    auditor.client_data(remove(1, "a") + remove(2, "b") + remove(2, "b2"))  # reused id
    with pytest.raises(SftpAuditError, match="more than 2 requests"):
        auditor.client_data(remove(3, "c"))
    auditor = SftpAuditor(max_handles=1)
    feed(auditor, [("c", open_(1, "a", READ) + open_(2, "b", READ)), ("s", handle_reply(1, b"1"))])
    with pytest.raises(SftpAuditError, match="more than 1 handles"):
        auditor.server_data(handle_reply(2, b"2"))


def test_error_keeps_events_decoded_before_it() -> None:
    auditor = SftpAuditor()
    auditor.client_data(remove(1, "/a"))
    with pytest.raises(SftpAuditError) as caught:
        auditor.server_data(status(1) + u32(1 << 30))
    assert caught.value.events == [FileEvent("remove", "/a", 0, True)]
    assert auditor.close() == []


# -- Hypothesis: a model session, split at random points ----------------------------

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@dataclass
class Session:
    """Segments of a plausible session and the events it must produce."""

    segments: list[Segment] = field(default_factory=list)
    expected: list[FileEvent] = field(default_factory=list)
    next_id: int = 1

    def rid(self) -> int:
        self.next_id += 1
        return self.next_id


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    session = Session(segments=[("c", init()), ("s", version())])
    for index in range(draw(st.integers(0, 6))):
        path = "/" + draw(names)
        kind = draw(st.sampled_from(["upload", "download", "remove", "rename", "listdir"]))
        handle = f"H{index}".encode()
        if kind == "upload":
            chunks = draw(st.lists(st.binary(max_size=300), max_size=4))
            oid, cid = session.rid(), session.rid()
            ids = [session.rid() for _ in chunks]
            session.segments += [
                ("c", open_(oid, path, WRITE | CREAT | TRUNC)),
                ("s", handle_reply(oid, handle)),
                ("c", b"".join(write(i, handle, c) for i, c in zip(ids, chunks, strict=True))),
                ("s", b"".join(status(i) for i in ids)),
                ("c", close_(cid, handle)),
                ("s", status(cid)),
            ]
            session.expected.append(FileEvent("upload", path, sum(map(len, chunks)), True))
        elif kind == "download":
            chunks = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=4))
            oid, cid = session.rid(), session.rid()
            ids = [session.rid() for _ in range(len(chunks) + 1)]
            session.segments += [
                ("c", open_(oid, path, READ)),
                ("s", handle_reply(oid, handle)),
                ("c", b"".join(read(i, handle) for i in ids)),
                (
                    "s",
                    b"".join(data_reply(i, c) for i, c in zip(ids, chunks, strict=False))
                    + status(ids[-1], 1),
                ),
                ("c", close_(cid, handle)),
                ("s", status(cid)),
            ]
            session.expected.append(FileEvent("download", path, sum(map(len, chunks)), True))
        elif kind == "remove":
            rid, code = session.rid(), draw(st.sampled_from([0, 2, 3]))
            session.segments += [("c", remove(rid, path)), ("s", status(rid, code))]
            detail = {0: "", 2: "NO_SUCH_FILE", 3: "PERMISSION_DENIED"}[code]
            session.expected.append(FileEvent("remove", path, 0, code == 0, detail))
        elif kind == "rename":
            rid = session.rid()
            session.segments += [("c", rename(rid, path, path + ".new")), ("s", status(rid))]
            session.expected.append(FileEvent("rename", path, 0, True, f"-> {path}.new"))
        else:
            oid, rid, cid = session.rid(), session.rid(), session.rid()
            count = draw(st.integers(0, 5))
            session.segments += [
                ("c", opendir(oid, path)),
                ("s", handle_reply(oid, handle)),
                ("c", readdir(rid, handle)),
                ("s", name_reply(rid, count)),
                ("c", close_(cid, handle)),
                ("s", status(cid)),
            ]
            session.expected.append(FileEvent("listdir", path, 0, True, f"{count} entries"))
    return session


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(), st.randoms(use_true_random=False))
def test_split_points_do_not_change_events(session: Session, rng: random.Random) -> None:
    whole = feed(SftpAuditor(), session.segments)
    assert whole == session.expected
    split = feed(SftpAuditor(), split_segments(session.segments, rng))
    assert split == whole


def _only_audit_errors(auditor: SftpAuditor, segments: Iterable[Segment]) -> None:
    try:
        feed(auditor, segments)
    except SftpAuditError as exc:
        assert exc.__cause__ is None, f"internal error, not a protocol error: {exc!r}"
    auditor.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("cs"), st.binary(max_size=64)), max_size=20))
def test_random_bytes_only_raise_audit_errors(segments: list[Segment]) -> None:
    _only_audit_errors(SftpAuditor(), segments)


packet_types = st.sampled_from(
    [1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 18, 20, 101, 102, 103, 104, 105, 200, 201, 0, 255]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("cs"), packet_types, st.binary(max_size=40)), max_size=25)
)
def test_framed_random_bodies_only_raise_audit_errors(
    items: list[tuple[str, int, bytes]],
) -> None:
    """Correct framing, random bodies: exercises every field parser."""
    segments = [
        (side, packet(ptype, body[:4].rjust(4, b"\0"), body[4:])) for side, ptype, body in items
    ]
    _only_audit_errors(SftpAuditor(max_pending=4, max_handles=2), segments)


@settings(max_examples=300, deadline=None)
@given(sessions(), st.randoms(use_true_random=False))
def test_mutated_sessions_only_raise_audit_errors(session: Session, rng: random.Random) -> None:
    segments = []
    for side, chunk in merge_sides(session.segments):
        mutable = bytearray(chunk)
        for _ in range(rng.randrange(4)):
            if not mutable:
                break
            spot = rng.randrange(len(mutable))
            action = rng.randrange(3)
            if action == 0:
                mutable[spot] = rng.randrange(256)
            elif action == 1:
                del mutable[spot : spot + rng.randrange(1, 8)]
            else:
                mutable[spot:spot] = rng.randbytes(rng.randrange(1, 8))
        segments.append((side, bytes(mutable)))
    _only_audit_errors(SftpAuditor(), segments)


# -- real OpenSSH clients against a real sftp-server, through a recording relay -----

SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")

FAKE_SSH = '''\
"""Stand-in for ssh(1): runs the "remote" side locally and records the channel."""
import json, os, struct, subprocess, sys, threading

argv = sys.argv[1:]
transcript = f"{os.environ['AUDIT_TRANSCRIPT']}.{os.getpid()}"
with open(os.environ["AUDIT_TRANSCRIPT"], "a") as index:  # one line per channel
    index.write(json.dumps({"argv": argv, "transcript": transcript}) + "\\n")
if "-s" in argv and argv[-1] == "sftp":
    command = [SFTP_SERVER]
else:
    command = ["/bin/sh", "-c", argv[-1]]
child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
lock = threading.Lock()
log = open(transcript, "ab")


def relay(source, dest, tag, done):
    try:
        while True:
            data = os.read(source, 65536)
            if not data:
                break
            with lock:  # recorded before it is forwarded: the log keeps causal order
                log.write(tag + struct.pack(">I", len(data)) + data)
                log.flush()
            view = memoryview(data)
            while view:
                view = view[os.write(dest, view):]
    except OSError:
        pass
    done()


to_server = threading.Thread(
    target=relay, args=(0, child.stdin.fileno(), b"c", child.stdin.close), daemon=True)
to_client = threading.Thread(
    target=relay, args=(child.stdout.fileno(), 1, b"s", lambda: os.close(1)), daemon=True)
to_server.start()
to_client.start()
code = child.wait()
to_client.join()
with lock:
    log.close()
    os._exit(code)
'''


def need_openssh() -> None:
    if not SFTP_SERVER.exists() or shutil.which("sftp") is None or shutil.which("scp") is None:
        pytest.fail(
            "OpenSSH sftp/scp clients or sftp-server missing: apt-get install openssh-server"
        )


@dataclass
class Channel:
    """One ssh invocation by the client: its argv and the recorded channel bytes."""

    argv: list[str]
    segments: list[Segment]


def run_with_fake_ssh(tmp_path: Path, args: list[str], *, check: bool = True) -> list[Channel]:
    """Run an OpenSSH client with ``-S fake_ssh``; return each channel it opened."""
    need_openssh()
    script = tmp_path / "fake_ssh.py"
    if not script.exists():
        script.write_text(f"#!{sys.executable}\nSFTP_SERVER = {str(SFTP_SERVER)!r}\n{FAKE_SSH}")
        script.chmod(0o755)
    index = tmp_path / f"channels-{len(list(tmp_path.glob('channels-*')))}.jsonl"
    result = subprocess.run(
        [args[0], "-S", str(script), *args[1:]],
        env={**os.environ, "AUDIT_TRANSCRIPT": str(index)},
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    entries = [json.loads(line) for line in index.read_text().splitlines()]
    return [Channel(e["argv"], read_transcript(Path(e["transcript"]))) for e in entries]


def read_transcript(path: Path) -> list[Segment]:
    """Parse the fake_ssh log: ``tag(1) || uint32 length || bytes`` records."""
    raw = path.read_bytes() if path.exists() else b""
    segments: list[Segment] = []
    pos = 0
    while pos < len(raw):
        (length,) = struct.unpack_from(">I", raw, pos + 1)
        segments.append((raw[pos : pos + 1].decode(), raw[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    return segments


def audit_sftp(segments: list[Segment]) -> list[FileEvent]:
    """Audit a transcript whole and randomly re-split; both must agree."""
    auditor = SftpAuditor()
    events = feed(auditor, segments) + auditor.close()
    resplit = SftpAuditor()
    again = feed(resplit, split_segments(segments, random.Random(7))) + resplit.close()
    assert again == events
    return events


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A 1 MiB random file, a small file, a tree, and an empty remote directory."""
    local = tmp_path / "local"
    (local / "tree" / "sub").mkdir(parents=True)
    big = local / "big.bin"
    big.write_bytes(random.Random(1).randbytes(1024 * 1024))
    small = local / "small.txt"
    small.write_text("hello bastion\n")
    (local / "tree" / "a.txt").write_text("a\n")
    (local / "tree" / "sub" / "b.bin").write_bytes(b"b" * 5000)
    (local / "tree" / "sub" / "empty").write_bytes(b"")
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "there.txt").write_bytes(b"r" * 70000)
    return {"local": local, "remote": remote, "big": big, "small": small}


@pytest.mark.integration
def test_real_sftp_session(tmp_path: Path, files: dict[str, Path]) -> None:
    remote = files["remote"]
    batch = tmp_path / "batch"
    batch.write_text(
        f"put {files['big']} {remote}/big.bin\n"
        f"put -p {files['small']} {remote}/\n"
        f"get {remote}/there.txt {tmp_path}/got.txt\n"
        f"mkdir {remote}/newdir\n"
        f"rename {remote}/small.txt {remote}/renamed.txt\n"
        f"ln -s {remote}/renamed.txt {remote}/link\n"
        f"chmod 600 {remote}/renamed.txt\n"
        f"rm {remote}/renamed.txt\n"
        f"rmdir {remote}/newdir\n"
        f"ls {remote}\n"
        f"-rm {remote}/missing\n"
        f"-put {files['small']} {remote}/no/such/dir/x\n"
    )
    [channel] = run_with_fake_ssh(tmp_path, ["sftp", "-b", str(batch), "target"])
    assert channel.argv[-3:] == ["--", "target", "sftp"] and "-s" in channel.argv
    events = audit_sftp(channel.segments)
    setstat_small = [e for e in events if e.op == "setstat" and e.path.endswith("small.txt")]
    assert setstat_small and all(e.ok for e in setstat_small)  # put -p sets times and mode
    assert [e for e in events if e.op != "setstat"] == [
        FileEvent("upload", f"{remote}/big.bin", 1024 * 1024, True),
        FileEvent("upload", f"{remote}/small.txt", 14, True),
        FileEvent("download", f"{remote}/there.txt", 70000, True),
        FileEvent("mkdir", f"{remote}/newdir", 0, True),
        FileEvent("rename", f"{remote}/small.txt", 0, True, f"-> {remote}/renamed.txt"),
        FileEvent("symlink", f"{remote}/link", 0, True, f"-> {remote}/renamed.txt"),
        FileEvent("remove", f"{remote}/renamed.txt", 0, True),
        FileEvent("rmdir", f"{remote}/newdir", 0, True),
        FileEvent("listdir", f"{remote}/", 0, True, "5 entries"),
        FileEvent("remove", f"{remote}/missing", 0, False, "NO_SUCH_FILE: No such file"),
        FileEvent(
            "open",
            f"{remote}/no/such/dir/x",
            0,
            False,
            "NO_SUCH_FILE: No such file (flags write,creat,trunc)",
        ),
    ]
    assert [e.detail for e in events if e.op == "setstat" and "renamed" in e.path] == ["mode=0600"]
    assert (tmp_path / "got.txt").read_bytes() == (remote / "there.txt").read_bytes()


@pytest.mark.integration
def test_real_scp_uses_sftp_and_is_audited(tmp_path: Path, files: dict[str, Path]) -> None:
    """OpenSSH 9 scp speaks SFTP by default: uploads, a recursive tree, a download."""
    remote = files["remote"]
    [up] = run_with_fake_ssh(
        tmp_path,
        ["scp", "-q", "-r", str(files["big"]), str(files["local"] / "tree"), f"target:{remote}/"],
    )
    assert up.argv[-1] == "sftp" and "-s" in up.argv
    events = audit_sftp(up.segments)
    uploads = [e for e in events if e.op == "upload"]
    assert sorted(uploads, key=lambda e: e.path) == [
        FileEvent("upload", f"{remote}/big.bin", 1024 * 1024, True),
        FileEvent("upload", f"{remote}/tree/a.txt", 2, True),
        FileEvent("upload", f"{remote}/tree/sub/b.bin", 5000, True),
        FileEvent("upload", f"{remote}/tree/sub/empty", 0, True),
    ]
    assert [e.path for e in events if e.op == "mkdir"] == [f"{remote}/tree", f"{remote}/tree/sub"]
    [down] = run_with_fake_ssh(
        tmp_path, ["scp", "-q", f"target:{remote}/there.txt", str(tmp_path / "copy.txt")]
    )
    assert [e for e in audit_sftp(down.segments) if e.op == "download"] == [
        FileEvent("download", f"{remote}/there.txt", 70000, True)
    ]
