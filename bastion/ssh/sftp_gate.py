"""Which SFTP requests must be judged before they go on, and where a refusal can be sent.

Sans-IO, beside ``sftp_audit`` (which only observes). ``client`` splits the
contractor's bytes into runs to forward as they are and ``Request``s naming the
paths a request would touch (open, remove, rename, mkdir, rmdir, setstat,
symlink, opendir and OpenSSH's rename/hardlink/lsetstat extensions); the relay
judges those first. A refused request is answered by the bastion with
SSH_FX_PERMISSION_DENIED (``refusal``), which must reach the client between two
whole server packets: ``server`` tracks the server's packet boundaries and puts
waiting refusals at the first one.

Packets are split with one header parse each (never per byte). A stream that
does not frame as SFTP sets ``broken``: the relay then closes the channel rather
than pass requests it cannot judge.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from bastion.ssh.sftp_audit import DEFAULT_MAX_PACKET_LENGTH, decode_path

_OPEN, _SETSTAT, _OPENDIR, _REMOVE, _MKDIR, _RMDIR, _RENAME, _SYMLINK = 3, 9, 11, 13, 14, 15, 18, 20
_EXTENDED, _STATUS = 200, 101
_FX_PERMISSION_DENIED = 3
_WRITING = 0x02 | 0x04 | 0x08 | 0x10  # write, append, creat, trunc
_SIMPLE = {_REMOVE: "remove", _MKDIR: "mkdir", _RMDIR: "rmdir", _SETSTAT: "setstat"}
_EXTENSIONS = {
    b"posix-rename@openssh.com": "rename",
    b"hardlink@openssh.com": "link",
    b"lsetstat@openssh.com": "setstat",
}


@dataclass(frozen=True)
class Request:
    """One request to judge: its id, its packet (as framed) and (path, operation) pairs."""

    request_id: int
    packet: bytes
    paths: tuple[tuple[str, str], ...]


def _strings(body: bytes, pos: int, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        (length,) = struct.unpack_from(">I", body, pos)
        pos += 4
        if pos + length > len(body):
            raise ValueError("string past the end")
        out.append(body[pos : pos + length])
        pos += length
    return out


def paths_of(body: bytes) -> tuple[int, tuple[tuple[str, str], ...]] | None:
    """The request id and the (path, operation) pairs of a client packet, or None."""
    ptype = body[0]
    try:
        (request_id,) = struct.unpack_from(">I", body, 1)
        if ptype == _OPEN:
            (raw,) = _strings(body, 5, 1)
            (pflags,) = struct.unpack_from(">I", body, 9 + len(raw))
            op = "write" if pflags & _WRITING else "read"
            return request_id, ((decode_path(raw), op),)
        if ptype == _OPENDIR:
            return request_id, ((decode_path(_strings(body, 5, 1)[0]), "list"),)
        if ptype in _SIMPLE:
            return request_id, ((decode_path(_strings(body, 5, 1)[0]), _SIMPLE[ptype]),)
        if ptype in (_RENAME, _SYMLINK):
            a, b = _strings(body, 5, 2)
            op = "rename" if ptype == _RENAME else "symlink"
            return request_id, ((decode_path(a), op), (decode_path(b), op))
        if ptype == _EXTENDED:
            (name,) = _strings(body, 5, 1)
            ext = _EXTENSIONS.get(name)
            if ext is None:
                return None
            count = 1 if ext == "setstat" else 2
            raws = _strings(body, 9 + len(name), count)
            return request_id, tuple((decode_path(r), ext) for r in raws)
    except (struct.error, ValueError):
        return None
    return None


def refusal(request_id: int, message: str) -> bytes:
    """SSH_FXP_STATUS PERMISSION_DENIED for ``request_id``, framed."""
    text = message.encode()
    body = struct.pack(">BII", _STATUS, request_id, _FX_PERMISSION_DENIED)
    body += struct.pack(">I", len(text)) + text + struct.pack(">I", 2) + b"en"
    return struct.pack(">I", len(body)) + body


class SftpGate:
    """Client packets to judge, and the server's packet boundaries."""

    def __init__(self, max_length: int = DEFAULT_MAX_PACKET_LENGTH) -> None:
        self._max = max_length
        self._client = bytearray()
        self._server_left = 0  # bytes of the current server packet not seen yet
        self._server_head = b""  # a length field cut between chunks
        self._waiting: list[bytes] = []
        self.broken = False

    def client(self, data: bytes) -> list[bytes | Request]:
        """The contractor's bytes: runs to forward and requests to judge, in order."""
        if self.broken:
            return []
        buf = self._client
        buf += data
        out: list[bytes | Request] = []
        start = pos = 0
        while len(buf) - pos >= 5:
            (length,) = struct.unpack_from(">I", buf, pos)
            if length == 0 or length > self._max:
                self.broken = True  # nothing more goes on: the relay closes the channel
                buf.clear()
                return out
            end = pos + 4 + length
            if end > len(buf):
                break
            found = paths_of(bytes(buf[pos + 4 : end])) if buf[pos + 4] in _JUDGED else None
            if found is not None:
                if pos > start:
                    out.append(bytes(buf[start:pos]))
                out.append(Request(found[0], bytes(buf[pos:end]), found[1]))
                start = end
            pos = end
        if pos > start:
            out.append(bytes(buf[start:pos]))
        del buf[:pos]
        return out

    def refuse(self, packet: bytes) -> bytes | None:
        """A refusal to send: returned when the server is between packets, else kept."""
        if self._server_left == 0 and not self._server_head:
            return packet
        self._waiting.append(packet)
        return None

    def server(self, data: bytes) -> list[bytes]:
        """The server's bytes, with waiting refusals put in at the first packet boundary."""
        if not self._waiting:
            self._advance(data)
            return [data]
        cut = self._advance(data, first_boundary=True)
        waiting, self._waiting = self._waiting, []
        if cut is None:
            self._waiting = waiting
            return [data]
        rest = data[cut:]
        self._advance(rest)
        return [data[:cut], *waiting, rest]

    def _advance(self, data: bytes, first_boundary: bool = False) -> int | None:
        """Follow server framing over ``data``; with ``first_boundary``, stop at the first."""
        pos, n = 0, len(data)
        while True:
            if self._server_left:
                take = min(self._server_left, n - pos)
                self._server_left -= take
                pos += take
                if self._server_left:
                    return None
            if first_boundary and not self._server_head:
                return pos
            if pos >= n:
                return None
            need = 4 - len(self._server_head)
            head = self._server_head + data[pos : pos + need]
            pos += len(head) - len(self._server_head)
            if len(head) < 4:
                self._server_head = head
                return None
            self._server_head = b""
            (self._server_left,) = struct.unpack(">I", head)


_JUDGED = frozenset(
    {_OPEN, _SETSTAT, _OPENDIR, _REMOVE, _MKDIR, _RMDIR, _RENAME, _SYMLINK, _EXTENDED}
)
