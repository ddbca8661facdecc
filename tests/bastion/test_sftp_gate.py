"""The SFTP gate: which requests are judged, and refusals only between whole server packets."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from bastion.ssh.sftp_gate import Request, SftpGate, paths_of, refusal


def _packet(ptype: int, request_id: int, *fields: bytes) -> bytes:
    body = struct.pack(">BI", ptype, request_id) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def _s(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


def test_requests_with_paths_are_split_out_in_order() -> None:
    stat = _packet(17, 1, _s(b"/etc"))  # STAT: not judged
    open_w = _packet(3, 2, _s(b"/etc/shadow"), struct.pack(">I", 0x1A), struct.pack(">I", 0))
    rename = _packet(18, 3, _s(b"/a"), _s(b"/b"))
    data = stat + open_w + rename
    gate = SftpGate()
    out = gate.client(data[:7]) + gate.client(data[7:])
    assert out == [
        stat,
        Request(2, open_w, (("/etc/shadow", "write"),)),
        Request(3, rename, (("/a", "rename"), ("/b", "rename"))),
    ]


def test_extended_rename_and_read_open() -> None:
    ext = _packet(200, 9, _s(b"posix-rename@openssh.com"), _s(b"/x"), _s(b"/y"))
    assert paths_of(ext[4:]) == (9, (("/x", "rename"), ("/y", "rename")))
    read = _packet(3, 4, _s(b"/r"), struct.pack(">I", 1), struct.pack(">I", 0))
    assert paths_of(read[4:]) == (4, (("/r", "read"),))


def test_a_broken_stream_forwards_nothing() -> None:
    gate = SftpGate()
    assert gate.client(b"\xff\xff\xff\xff\x03junk") == []
    assert gate.broken and gate.client(b"more") == []


def _frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos : pos + 4 + n])
        pos += 4 + n
    assert pos == len(data)
    return out


@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    st.integers(min_value=0, max_value=7),
)
def test_refusals_land_between_whole_server_packets(
    bodies: list[bytes], cuts: list[int], inject_after: int
) -> None:
    packets = [struct.pack(">I", len(b)) + b for b in bodies]
    stream = b"".join(packets)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    gate = SftpGate()
    denied = refusal(77, "bastion: rule 'x' (deny): /p")
    out = bytearray()
    for i, chunk in enumerate(chunks):
        if i == min(inject_after, len(chunks) - 1):
            now = gate.refuse(denied)
            if now is not None:
                out += now
        for piece in gate.server(chunk):
            out += piece
    frames = _frames(bytes(out))
    assert denied in frames
    frames.remove(denied)
    assert frames == packets
