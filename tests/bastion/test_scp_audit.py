"""Legacy scp auditing: command recognition, hand-built streams, Hypothesis, real ``scp -O``."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.ssh.scp_audit import ScpAuditError, ScpAuditor, ScpCommand, parse_scp_command
from bastion.ssh.sftp_audit import FileEvent
from tests.bastion.test_sftp_audit import Segment, merge_sides, run_with_fake_ssh, split_segments

OK = b"\0"

# -- parse_scp_command -------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("scp -t -- /tmp/x", ScpCommand("upload", ("/tmp/x",), False)),
        ("scp -r -d -t /tmp", ScpCommand("upload", ("/tmp",), True)),
        ("scp -p -f file", ScpCommand("download", ("file",), False)),
        ("scp -r -p -d -t /srv/leg", ScpCommand("upload", ("/srv/leg",), True)),
        ("scp -v -r -f /srv/a /srv/b", ScpCommand("download", ("/srv/a", "/srv/b"), True)),
        ("/usr/bin/scp -rpf 'my file'", ScpCommand("download", ("my file",), True)),
        ("scp -t -- -dashed", ScpCommand("upload", ("-dashed",), False)),
        ("scp -l 100 -t x", ScpCommand("upload", ("x",), False)),
        ("scp -oFoo=bar -f y", ScpCommand("download", ("y",), False)),
        ("scp -f '/tmp/a;b'", ScpCommand("download", ("/tmp/a;b",), False)),
        ("scp -f *.txt", ScpCommand("download", ("*.txt",), False)),
        ("scp -t", ScpCommand("upload", (), False)),
    ],
)
def test_parse_scp_command_accepts_openssh_forms(command: str, expected: ScpCommand) -> None:
    assert parse_scp_command(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        "",
        "ls -l",
        "scpx -t x",
        "sh -c 'scp -t x'",
        "rsync --server -e.Lsfx . /tmp",
        "scp a b",  # a client-mode copy on the target, not this channel's transfer
        "scp -t -f x",
        "scp -t x; rm -rf /",
        "scp -t x && id",
        "scp -t x | tee y",
        "scp -t x > y",
        "scp -t $(id)",
        "scp -t `id`",
        "scp -t x\nid",
        "scp -t 'unbalanced",
    ],
)
def test_parse_scp_command_rejects_other_commands(command: str) -> None:
    assert parse_scp_command(command) is None


@given(st.text(max_size=80))
def test_parse_scp_command_never_raises(command: str) -> None:
    parse_scp_command(command)
    parse_scp_command("scp -t " + command)


# -- ScpAuditor, hand-built ------------------------------------------------------------


def feed(auditor: ScpAuditor, segments: Iterable[Segment]) -> list[FileEvent]:
    events: list[FileEvent] = []
    for side, chunk in segments:
        events += auditor.client_data(chunk) if side == "c" else auditor.server_data(chunk)
    return events


def run(direction: str, source: list[bytes], sink: list[bytes]) -> list[FileEvent]:
    """Interleave source and sink steps (sink first: its greeting) and flush at the end."""
    src, snk = ("c", "s") if direction == "upload" else ("s", "c")
    segments: list[Segment] = []
    for index in range(max(len(source), len(sink))):
        if index < len(sink):
            segments.append((snk, sink[index]))
        if index < len(source):
            segments.append((src, source[index]))
    auditor = ScpAuditor(direction)
    return feed(auditor, segments) + auditor.close()


def test_upload_with_times_and_byte_at_a_time() -> None:
    data = bytes(range(256)) * 4 + b"\n\0C0644 1 evil\n"
    source = [b"T1700000000 0 1700000001 0\n", b"C0644 %d a.bin\n" % len(data), data + OK]
    sink = [OK, OK, OK, OK]
    expected = [FileEvent("upload", "a.bin", len(data), True)]
    assert run("upload", source, sink) == expected
    auditor = ScpAuditor("upload")
    stream = [("s", OK)] + [("c", bytes([b])) for b in source[0]] + [("s", OK)]
    stream += [("c", bytes([b])) for b in source[1]] + [("s", OK)]
    stream += [("c", bytes([b])) for b in source[2]] + [("s", OK)]
    assert feed(auditor, stream) == expected


def test_download_direction_reads_the_server_as_source() -> None:
    source = [b"C0600 5 secret\n", b"12345" + OK]
    assert run("download", source, [OK, OK, OK]) == [FileEvent("download", "secret", 5, True)]


def test_refused_file_has_no_data_and_the_next_record_follows() -> None:
    source = [b"C0644 100 clash\n", b"C0644 3 next\n", b"abc" + OK]
    sink = [OK, b"\x01scp: /srv/clash: Is a directory\n", OK, OK]
    assert run("upload", source, sink) == [
        FileEvent("upload", "clash", 0, False, "scp: /srv/clash: Is a directory"),
        FileEvent("upload", "next", 3, True),
    ]


def test_errors_on_either_side_of_the_data() -> None:
    source = [b"C0644 4 a\n", b"\0\0\0\0\x01scp: a: Input/output error\n", b"C0644 2 b\n", b"xy\0"]
    sink = [OK, OK, OK, OK, b"\x01scp: /srv/b: No space left on device\n"]
    assert run("upload", source, sink) == [
        FileEvent("upload", "a", 4, False, "scp: a: Input/output error"),
        FileEvent("upload", "b", 2, False, "scp: /srv/b: No space left on device"),
    ]


def test_recursive_paths_follow_the_directory_stack() -> None:
    source = [
        b"D0755 0 top\n",
        b"C0644 1 f1\n",
        b"1\0",
        b"D0700 0 sub\n",
        b"C0644 0 empty\n",
        OK,
        b"E\n",
        b"D0755 0 locked\n",
        b"C0644 2 f2\n",
        b"22\0",
        b"E\n",
        b"C0644 1 last\n",
        b"9\0",
    ]
    sink = [OK] * 7 + [OK, b"\x01scp: /srv/top/locked: Permission denied\n"] + [OK] * 5
    assert run("upload", source, sink) == [
        FileEvent("upload", "top/f1", 1, True),
        FileEvent("upload", "top/sub/empty", 0, True),
        FileEvent(
            "upload",
            "top/locked",
            0,
            False,
            "directory refused: scp: /srv/top/locked: Permission denied",
        ),
        FileEvent("upload", "top/f2", 2, True),
        FileEvent("upload", "last", 1, True),
    ]


def test_refusals_that_name_no_file() -> None:
    assert run("upload", [], [b"\x01scp: /nope: No such file or directory\n"]) == [
        FileEvent("upload", "", 0, False, "scp: /nope: No such file or directory")
    ]
    assert run("download", [b"\x01scp: /etc/shadow: Permission denied\n"], [OK]) == [
        FileEvent("download", "", 0, False, "scp: /etc/shadow: Permission denied")
    ]


def test_close_reports_cut_off_files() -> None:
    assert run("upload", [b"C0644 10 a\n", b"12345"], [OK, OK]) == [
        FileEvent("upload", "a", 5, False, "unclosed")
    ]
    assert run("upload", [b"C0644 2 a\n", b"12\0"], [OK, OK]) == [
        FileEvent("upload", "a", 2, False, "unclosed")
    ]
    assert run("upload", [b"C0644 2 a\n"], [OK]) == [FileEvent("upload", "a", 0, False, "unclosed")]
    auditor = ScpAuditor("upload")
    auditor.close()
    with pytest.raises(ScpAuditError, match="closed"):
        auditor.client_data(b"x")


def test_response_fed_before_the_record_is_held() -> None:
    """A relay may feed the sink's answer first; the order of feeds must not matter."""
    auditor = ScpAuditor("upload")
    assert auditor.server_data(OK + OK + OK) == []
    assert auditor.client_data(b"C0644 2 a\nab\0") == [FileEvent("upload", "a", 2, True)]


def test_bad_direction_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        ScpAuditor("sideways")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"T17 0 x 0\n", "malformed T"),
        (b"C0x44 1 a\n", "malformed C"),
        (b"C0644 a\n", "malformed C"),
        (b"D0755 0\n", "malformed D"),
        (b"C0644 99999999999999999999 a\n", "out of range"),
        (b"Xhello\n", "expected a control record"),
        (b"\n", "empty control record"),
        (b"C0644 1 " + b"a" * 5000, "longer than 4096"),
    ],
)
def test_hostile_records_raise_audit_error(source: bytes, message: str) -> None:
    auditor = ScpAuditor("upload")
    auditor.server_data(OK)
    with pytest.raises(ScpAuditError, match=message):
        auditor.client_data(source)
    with pytest.raises(ScpAuditError, match="auditing stopped"):
        auditor.server_data(OK)


def test_caps_on_depth_lookahead_and_unsolicited_bytes() -> None:
    auditor = ScpAuditor("upload", max_depth=2)
    auditor.server_data(OK * 4)  # the greeting, then one per D record
    with pytest.raises(ScpAuditError, match="deeper than 2"):
        auditor.client_data(b"D0755 0 a\nD0755 0 b\nD0755 0 c\n")
    auditor = ScpAuditor("upload", max_ahead=1000)
    auditor.client_data(b"C0644 5000 a\n")
    with pytest.raises(ScpAuditError, match="ahead of the sink"):
        auditor.client_data(b"x" * 1001)
    auditor = ScpAuditor("download", max_ahead=1000)
    with pytest.raises(ScpAuditError, match="unsolicited"):
        auditor.client_data(OK * 1100)


def test_error_keeps_events_decoded_before_it() -> None:
    auditor = ScpAuditor("upload")
    auditor.server_data(OK + OK + OK)
    with pytest.raises(ScpAuditError) as caught:
        auditor.client_data(b"C0644 1 a\nz\0Bogus\n")
    assert caught.value.events == [FileEvent("upload", "a", 1, True)]


# -- Hypothesis: a model transfer, fed whole, split, and in any interleaving ---------

names = st.text(st.characters(codec="utf-8", exclude_characters="\n\x00/"), min_size=1, max_size=10)


@dataclass
class Transfer:
    """Segments of a plausible scp exchange and the events it must produce."""

    direction: str
    segments: list[Segment] = field(default_factory=list)
    expected: list[FileEvent] = field(default_factory=list)

    def source(self, data: bytes) -> None:
        self.segments.append(("c" if self.direction == "upload" else "s", data))

    def sink(self, data: bytes) -> None:
        self.segments.append(("s" if self.direction == "upload" else "c", data))


@st.composite
def entries(draw: st.DrawFn, transfer: Transfer, prefix: str, depth: int) -> None:
    for _ in range(draw(st.integers(0, 4 if depth < 2 else 2))):
        name = draw(names)
        path = f"{prefix}{name}"
        kind = draw(st.sampled_from(["file", "file", "dir", "error"] if depth < 3 else ["file"]))
        if kind == "error":
            transfer.source(b"\x01scp: unreadable: Permission denied\n")
            transfer.expected.append(
                FileEvent(transfer.direction, "", 0, False, "scp: unreadable: Permission denied")
            )
            continue
        if draw(st.booleans()):
            transfer.source(b"T1700000000 0 1700000000 0\n")
            transfer.sink(OK)
        raw = name.encode()
        if kind == "dir":
            transfer.source(b"D0755 0 " + raw + b"\n")
            if not draw(st.booleans()):
                transfer.sink(b"\x01scp: no dir\n")
                transfer.expected.append(
                    FileEvent(transfer.direction, path, 0, False, "directory refused: scp: no dir")
                )
                continue
            transfer.sink(OK)
            draw(entries(transfer, f"{path}/", depth + 1))
            transfer.source(b"E\n")
            transfer.sink(OK)
            continue
        size = draw(st.integers(0, 2000))
        transfer.source(b"C0644 %d " % size + raw + b"\n")
        if not draw(st.booleans()):
            transfer.sink(b"\x01scp: refused\n")
            transfer.expected.append(FileEvent(transfer.direction, path, 0, False, "scp: refused"))
            continue
        transfer.sink(OK)
        source_ok, sink_ok = draw(st.booleans()), draw(st.booleans())
        data = bytes((i * 7) % 256 for i in range(size))  # includes \0 and \n bytes
        transfer.source(data + (OK if source_ok else b"\x01scp: read error\n"))
        transfer.sink(OK if sink_ok else b"\x02scp: write error\n")
        detail = "; ".join(
            x
            for x in ("" if source_ok else "scp: read error", "" if sink_ok else "scp: write error")
            if x
        )
        transfer.expected.append(
            FileEvent(transfer.direction, path, size, source_ok and sink_ok, detail)
        )


@st.composite
def transfers(draw: st.DrawFn) -> Transfer:
    transfer = Transfer(draw(st.sampled_from(["upload", "download"])))
    transfer.sink(OK)
    draw(entries(transfer, "", 0))
    return transfer


def audit(direction: str, segments: Sequence[Segment]) -> list[FileEvent]:
    auditor = ScpAuditor(direction)
    return feed(auditor, segments) + auditor.close()


@settings(max_examples=200, deadline=None)
@given(transfers(), st.randoms(use_true_random=False))
def test_split_and_interleaving_do_not_change_events(
    transfer: Transfer, rng: random.Random
) -> None:
    whole = audit(transfer.direction, transfer.segments)
    assert whole == transfer.expected
    assert audit(transfer.direction, split_segments(transfer.segments, rng)) == whole
    # Each direction fed as one run, either first: buffering makes the order irrelevant.
    runs = [(side, b"".join(c for s, c in transfer.segments if s == side)) for side in "cs"]
    assert audit(transfer.direction, split_segments(runs, rng)) == whole
    assert audit(transfer.direction, split_segments(runs[::-1], rng)) == whole


def _only_audit_errors(auditor: ScpAuditor, segments: Iterable[Segment]) -> None:
    try:
        feed(auditor, segments)
    except ScpAuditError as exc:
        assert exc.__cause__ is None, f"internal error, not a protocol error: {exc!r}"
    auditor.close()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["upload", "download"]),
    st.lists(st.tuples(st.sampled_from("cs"), st.binary(max_size=40)), max_size=20),
)
def test_random_bytes_only_raise_audit_errors(direction: str, segments: list[Segment]) -> None:
    _only_audit_errors(ScpAuditor(direction, max_line=64, max_depth=3, max_ahead=256), segments)


records = st.sampled_from(
    [b"C0644 3 a\n", b"D0755 0 d\n", b"E\n", b"T1 0 1 0\n", b"\x01oops\n", b"\0", b"abc", b"\n"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["upload", "download"]),
    st.lists(st.tuples(st.sampled_from("cs"), st.lists(records, max_size=4)), max_size=20),
)
def test_record_soup_only_raises_audit_errors(
    direction: str, items: list[tuple[str, list[bytes]]]
) -> None:
    segments = [(side, b"".join(parts)) for side, parts in items]
    _only_audit_errors(ScpAuditor(direction, max_depth=3), segments)


@settings(max_examples=300, deadline=None)
@given(transfers(), st.randoms(use_true_random=False))
def test_mutated_transfers_only_raise_audit_errors(transfer: Transfer, rng: random.Random) -> None:
    segments = []
    for side, chunk in merge_sides(transfer.segments):
        mutable = bytearray(chunk)
        for _ in range(rng.randrange(4)):
            if not mutable:
                break
            spot = rng.randrange(len(mutable))
            action = rng.randrange(3)
            if action == 0:
                mutable[spot] = rng.choice([0, 1, 2, 10, 32, 48, 67, 68, 69, 84, 255])
            elif action == 1:
                del mutable[spot : spot + rng.randrange(1, 8)]
            else:
                mutable[spot:spot] = rng.randbytes(rng.randrange(1, 8))
        segments.append((side, bytes(mutable)))
    _only_audit_errors(ScpAuditor(transfer.direction), segments)


# -- real OpenSSH scp -O: source and sink processes paired through a recording relay ----


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A 1 MiB random file, a small file, a tree, and a remote directory to copy into."""
    local = tmp_path / "local"
    (local / "tree" / "sub").mkdir(parents=True)
    (local / "big.bin").write_bytes(random.Random(2).randbytes(1024 * 1024))
    (local / "small.txt").write_text("hello bastion\n")
    (local / "tree" / "a.txt").write_text("a\n")
    (local / "tree" / "sub" / "b.bin").write_bytes(b"b" * 5000)
    (local / "tree" / "sub" / "empty").write_bytes(b"")
    remote = tmp_path / "remote"
    remote.mkdir()
    return {"local": local, "remote": remote}


def audit_channel(argv: list[str], segments: list[Segment]) -> tuple[ScpCommand, list[FileEvent]]:
    """Recognise the exec command the client sent, then audit the channel whole and re-split."""
    command = parse_scp_command(argv[-1])
    assert command is not None, argv
    events = audit(command.direction, segments)
    assert audit(command.direction, split_segments(segments, random.Random(3))) == events
    return command, events


@pytest.mark.integration
def test_real_legacy_scp_upload_and_download(tmp_path: Path, files: dict[str, Path]) -> None:
    local, remote = files["local"], files["remote"]
    [up] = run_with_fake_ssh(
        tmp_path,
        [
            "scp",
            "-O",
            "-q",
            "-p",
            "-r",
            str(local / "big.bin"),
            str(local / "small.txt"),
            str(local / "tree"),
            f"target:{remote}",
        ],
    )
    command, events = audit_channel(up.argv, up.segments)
    assert command == ScpCommand("upload", (str(remote),), True)
    assert sorted(events, key=lambda e: e.path) == [
        FileEvent("upload", "big.bin", 1024 * 1024, True),
        FileEvent("upload", "small.txt", 14, True),
        FileEvent("upload", "tree/a.txt", 2, True),
        FileEvent("upload", "tree/sub/b.bin", 5000, True),
        FileEvent("upload", "tree/sub/empty", 0, True),
    ]
    assert (remote / "big.bin").read_bytes() == (local / "big.bin").read_bytes()

    download_dir = tmp_path / "downloaded"
    download_dir.mkdir()
    [down] = run_with_fake_ssh(
        tmp_path, ["scp", "-O", "-q", "-r", f"target:{remote}/tree", str(download_dir)]
    )
    command, events = audit_channel(down.argv, down.segments)
    assert command == ScpCommand("download", (f"{remote}/tree",), True)
    assert sorted(events, key=lambda e: e.path) == [
        FileEvent("download", "tree/a.txt", 2, True),
        FileEvent("download", "tree/sub/b.bin", 5000, True),
        FileEvent("download", "tree/sub/empty", 0, True),
    ]


@pytest.mark.integration
def test_real_legacy_scp_refusals(tmp_path: Path, files: dict[str, Path]) -> None:
    """The sink refuses one file (a directory is in the way); the next one still counts."""
    local, remote = files["local"], files["remote"]
    (local / "clash").write_bytes(b"c" * 3000)
    (remote / "clash").mkdir()
    [up] = run_with_fake_ssh(
        tmp_path,
        ["scp", "-O", "-q", str(local / "clash"), str(local / "small.txt"), f"target:{remote}"],
        check=False,
    )
    _, events = audit_channel(up.argv, up.segments)
    assert events == [
        FileEvent("upload", "clash", 0, False, f"scp: {remote}/clash: Is a directory"),
        FileEvent("upload", "small.txt", 14, True),
    ]
    [down] = run_with_fake_ssh(
        tmp_path, ["scp", "-O", "-q", f"target:{remote}/missing", str(tmp_path)], check=False
    )
    _, events = audit_channel(down.argv, down.segments)
    assert events == [
        FileEvent("download", "", 0, False, f"scp: {remote}/missing: No such file or directory")
    ]
