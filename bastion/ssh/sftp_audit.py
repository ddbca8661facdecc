"""Audit file transfers in a relayed SFTP v3 session without terminating it.

The bastion relays the raw bytes of an SSH ``sftp`` subsystem channel between the
user's client and the target's sftp-server.  It must not alter that stream, but it
has to log *what happened to which file*: uploads, downloads and the metadata
operations (remove, rename, ...).  :class:`SftpAuditor` is a sans-IO observer in the
style of h11: the relay hands it every chunk it forwards, in the order it forwards
them, and gets back :class:`FileEvent` objects to log.  No sockets, no clock.

Protocol: SFTP version 3 (draft-ietf-secsh-filexfer-02), which is what OpenSSH
speaks, plus OpenSSH's ``@openssh.com`` extensions for rename, hard links, lsetstat
and server-side copy.  OpenSSH 9's ``scp`` speaks this protocol too (unless
``scp -O``), so this module also audits modern scp.

How the stream is followed
    Packets are ``uint32 length || byte type || payload``; every request after INIT
    carries a ``uint32 request-id`` that its reply repeats.  Requests that matter
    are remembered by id until their reply.  File handles are learned from
    SSH_FXP_HANDLE replies; WRITE bytes are counted when the server acknowledges
    them with SSH_FX_OK, READ bytes when the DATA reply arrives.  Transfers are
    reported when the CLOSE of their handle is answered; metadata operations when
    their STATUS arrives.  Feed each direction in the order the relay forwards it
    (a reply fed before its request is ignored, as if it were unrelated).

Path decoding
    Paths are bytes on the wire.  They are decoded as UTF-8 with
    ``errors="backslashreplace"`` (see :func:`decode_path`): invalid bytes become
    ``\\xNN`` text, so every path is a ``str`` any log sink can encode.
    ``surrogateescape`` would round-trip, but it produces strings that make
    ``str.encode("utf-8")`` raise inside loggers and JSON writers.  The price: a file
    literally named ``\\xff`` logs the same as one whose name is the byte 0xFF.
    Control characters (a newline in a file name) are kept: log writers must
    escape them, as JSON encoders do.

Hostile input
    Anything that cannot be followed raises :class:`SftpAuditError` and nothing else.
    The relay should then stop auditing that channel, log the error (and the events
    it carries) and keep relaying.  Memory is bounded: packets longer than
    ``max_packet_length``, more than ``max_pending`` outstanding tracked requests or
    more than ``max_handles`` open handles raise; stored paths are cut at
    :data:`MAX_PATH_BYTES`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_HANDLES",
    "DEFAULT_MAX_PACKET_LENGTH",
    "DEFAULT_MAX_PENDING",
    "FILE_OPS",
    "MAX_PATH_BYTES",
    "FileEvent",
    "SftpAuditError",
    "SftpAuditor",
    "decode_path",
]

#: OpenSSH's sftp-server refuses messages over 256 KiB; allow some slack for others.
DEFAULT_MAX_PACKET_LENGTH: Final = 256 * 1024 + 16 * 1024
#: OpenSSH's sftp client keeps 64 requests in flight by default (``sftp -R``).
DEFAULT_MAX_PENDING: Final = 1024
#: sftp-server is limited by its descriptor table; 1024 open handles is plenty.
DEFAULT_MAX_HANDLES: Final = 1024
#: Paths longer than PATH_MAX are cut here so that hostile peers cannot pin memory.
MAX_PATH_BYTES: Final = 4096
_MAX_MESSAGE_BYTES: Final = 256
_MAX_HANDLE_BYTES: Final = 256  # draft-02 section 3: handles are at most 256 bytes

#: Every value :attr:`FileEvent.op` can take, across the SFTP and scp auditors.
FILE_OPS: Final = frozenset(
    {
        "upload",
        "download",
        "open",
        "remove",
        "rename",
        "mkdir",
        "rmdir",
        "setstat",
        "symlink",
        "listdir",
    }
)

# Packet types (draft-02 section 3).
_INIT, _VERSION, _OPEN, _CLOSE, _READ, _WRITE = 1, 2, 3, 4, 5, 6
_SETSTAT, _FSETSTAT, _OPENDIR, _READDIR, _REMOVE = 9, 10, 11, 12, 13
_MKDIR, _RMDIR, _RENAME, _SYMLINK = 14, 15, 18, 20
_STATUS, _HANDLE, _DATA, _NAME, _ATTRS = 101, 102, 103, 104, 105
_EXTENDED, _EXTENDED_REPLY = 200, 201
_REPLY_TYPES: Final = frozenset({_STATUS, _HANDLE, _DATA, _NAME, _ATTRS, _EXTENDED_REPLY})
_TYPE_NAMES: Final = {
    _STATUS: "STATUS",
    _HANDLE: "HANDLE",
    _DATA: "DATA",
    _NAME: "NAME",
    _ATTRS: "ATTRS",
    _EXTENDED_REPLY: "EXTENDED_REPLY",
}

# Status codes (draft-02 section 7).
_FX_OK, _FX_EOF = 0, 1
_STATUS_NAMES: Final = (
    "OK",
    "EOF",
    "NO_SUCH_FILE",
    "PERMISSION_DENIED",
    "FAILURE",
    "BAD_MESSAGE",
    "NO_CONNECTION",
    "CONNECTION_LOST",
    "OP_UNSUPPORTED",
)

# OPEN pflags (draft-02 section 6.3).
_PFLAG_NAMES: Final = (
    (0x01, "read"),
    (0x02, "write"),
    (0x04, "append"),
    (0x08, "creat"),
    (0x10, "trunc"),
    (0x20, "excl"),
)
_CREAT, _TRUNC = 0x08, 0x10


class SftpAuditError(Exception):
    """The stream cannot be followed as SFTP v3; stop auditing this channel.

    Raised for malformed or oversized packets, unsupported versions, replies that
    contradict their request, and resource caps.  ``events`` holds the events that
    were decoded from the same call before the error, so none are lost.
    """

    def __init__(self, message: str, events: list[FileEvent] | None = None) -> None:
        super().__init__(message)
        self.events: list[FileEvent] = events if events is not None else []


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One audited file operation, ready to log.

    ``op`` is one of :data:`FILE_OPS`; ``path`` is the decoded wire path (for scp, the
    path relative to the transfer root); ``bytes`` is the payload size moved
    (0 for metadata operations); ``ok`` says whether the peer reported success;
    ``detail`` explains failures or carries extras such as a rename's new name.
    """

    op: str
    path: str
    bytes: int
    ok: bool
    detail: str = ""


def decode_path(raw: bytes) -> str:
    """Decode wire bytes for logging: UTF-8 with ``backslashreplace``, cut at MAX_PATH_BYTES.

    Never raises.  A cut path ends with ``"...(truncated)"``.
    """
    if len(raw) > MAX_PATH_BYTES:
        return raw[:MAX_PATH_BYTES].decode("utf-8", "backslashreplace") + "...(truncated)"
    return raw.decode("utf-8", "backslashreplace")


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _status_text(code: int, message: bytes) -> str:
    name = _STATUS_NAMES[code] if code < len(_STATUS_NAMES) else f"status {code}"
    text = message[:_MAX_MESSAGE_BYTES].decode("utf-8", "backslashreplace").strip()
    return f"{name}: {text}" if text and text.upper() != name else name


def _flag_names(pflags: int) -> str:
    return ",".join(name for bit, name in _PFLAG_NAMES if pflags & bit) or "none"


class _Reader:
    """Bounds-checked big-endian field reader over one packet."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, n: int) -> int:
        start = self._pos
        if n > len(self._data) - start:
            raise SftpAuditError("malformed packet: field runs past the end")
        self._pos = start + n
        return start

    def u8(self) -> int:
        return self._data[self._take(1)]

    def u32(self) -> int:
        start = self._take(4)
        return int.from_bytes(self._data[start : start + 4], "big")

    def u64(self) -> int:
        start = self._take(8)
        return int.from_bytes(self._data[start : start + 8], "big")

    def string(self) -> bytes:
        length = self.u32()
        start = self._take(length)
        return self._data[start : start + length]

    def skip_string(self) -> int:
        length = self.u32()
        self._take(length)
        return length

    def path(self) -> str:
        return decode_path(self.string())

    def at_end(self) -> bool:
        return self._pos >= len(self._data)


def _attrs_summary(reader: _Reader) -> str:
    """Describe what a SETSTAT-style ATTRS block changes (size, owner, mode, times)."""
    flags = reader.u32()
    parts: list[str] = []
    if flags & 0x1:
        parts.append(f"size={reader.u64()}")
    if flags & 0x2:
        uid, gid = reader.u32(), reader.u32()
        parts.append(f"uid={uid} gid={gid}")
    if flags & 0x4:
        parts.append(f"mode={reader.u32() & 0o7777:04o}")
    if flags & 0x8:
        atime, mtime = reader.u32(), reader.u32()
        parts.append(f"atime={atime} mtime={mtime}")
    return " ".join(parts)


class _Framer:
    """Reassembles ``uint32 length || body`` packets across arbitrary splits."""

    __slots__ = ("_buf", "_max", "_side")

    def __init__(self, side: str, max_length: int) -> None:
        self._buf = bytearray()
        self._max = max_length
        self._side = side

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> bytes | None:
        """The next complete packet body, or None until more bytes arrive."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = struct.unpack_from(">I", buf)
        if length == 0 or length > self._max:
            raise SftpAuditError(f"{self._side} packet length {length} outside 1..{self._max}")
        if len(buf) - 4 < length:
            return None
        body = bytes(buf[4 : 4 + length])
        del buf[: 4 + length]
        return body


@dataclass(slots=True)
class _Handle:
    """What we know about one open handle; becomes events when it is closed."""

    path: str
    is_dir: bool
    pflags: int = 0
    reads: int = 0
    writes: int = 0
    read_bytes: int = 0
    written_bytes: int = 0
    entries: int = 0
    error: str = ""
    copy_note: str = ""
    copied_bytes: int = 0


@dataclass(slots=True)
class _Pending:
    """A request awaiting its reply.  ``kind`` picks which reply types are valid."""

    kind: str  # open, opendir, read, write, readdir, close, path_op, copy
    op: str = ""
    path: str = ""
    detail: str = ""
    pflags: int = 0
    handle: bytes = b""
    other_handle: bytes = b""
    length: int = 0


_HANDLE_KINDS: Final = frozenset({"read", "write", "readdir", "close"})


class SftpAuditor:
    """Sans-IO observer of one SFTP v3 channel; turns relayed bytes into FileEvents.

    Call :meth:`client_data` with client-to-server bytes and :meth:`server_data` with
    server-to-client bytes, in relay order, and :meth:`close` when the channel ends.
    After an :class:`SftpAuditError` the auditor is finished: further feeds raise
    again (``close`` still flushes what was known).
    """

    def __init__(
        self,
        *,
        max_packet_length: int = DEFAULT_MAX_PACKET_LENGTH,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_handles: int = DEFAULT_MAX_HANDLES,
    ) -> None:
        self._client = _Framer("client", max_packet_length)
        self._server = _Framer("server", max_packet_length)
        self._max_pending = max_pending
        self._max_handles = max_handles
        self._pending: dict[int, _Pending] = {}
        self._handles: dict[bytes, _Handle] = {}
        self._version: int | None = None
        self._stopped: str | None = None

    @property
    def version(self) -> int | None:
        """The protocol version the server announced, once seen."""
        return self._version

    def client_data(self, data: bytes) -> list[FileEvent]:
        """Observe client-to-server bytes.  Raises SftpAuditError if they cannot be followed."""
        return self._feed(self._client, data, self._on_client_packet)

    def server_data(self, data: bytes) -> list[FileEvent]:
        """Observe server-to-client bytes.  Raises SftpAuditError if they cannot be followed."""
        return self._feed(self._server, data, self._on_server_packet)

    def close(self) -> list[FileEvent]:
        """The channel ended: report handles never closed and requests never answered.

        Open handles become their usual events with ``ok=False, detail="unclosed"``;
        unanswered metadata requests become ``ok=False, detail="no reply"``.  Never
        raises; the auditor accepts no more data afterwards.
        """
        events: list[FileEvent] = []
        for handle in self._handles.values():
            events.extend(self._finish(handle, ok=False, note="unclosed"))
        for pending in self._pending.values():
            if pending.kind in ("open", "opendir", "path_op"):
                op = {"open": "open", "opendir": "listdir"}.get(pending.kind, pending.op)
                events.append(
                    FileEvent(op, pending.path, 0, False, _join(pending.detail, "no reply"))
                )
        self._handles.clear()
        self._pending.clear()
        if self._stopped is None:
            self._stopped = "the channel was closed"
        return events

    # -- plumbing -----------------------------------------------------------------

    def _feed(
        self,
        framer: _Framer,
        data: bytes,
        handler: Callable[[bytes, list[FileEvent]], None],
    ) -> list[FileEvent]:
        if self._stopped is not None:
            raise SftpAuditError(f"auditing stopped: {self._stopped}")
        events: list[FileEvent] = []
        try:
            framer.feed(data)
            while (packet := framer.next_packet()) is not None:
                handler(packet, events)
        except SftpAuditError as exc:
            self._stopped = str(exc)
            exc.events = events + exc.events
            raise
        except Exception as exc:  # a bug here must never take the relay down
            self._stopped = f"internal error: {exc!r}"
            raise SftpAuditError(self._stopped, events) from exc
        return events

    def _track(self, request_id: int, pending: _Pending) -> None:
        if request_id not in self._pending and len(self._pending) >= self._max_pending:
            raise SftpAuditError(f"more than {self._max_pending} requests outstanding")
        self._pending[request_id] = pending

    def _path_op(self, request_id: int, op: str, path: str, detail: str = "") -> None:
        self._track(request_id, _Pending("path_op", op=op, path=path, detail=detail))

    # -- client to server ---------------------------------------------------------

    def _on_client_packet(self, packet: bytes, events: list[FileEvent]) -> None:
        reader = _Reader(packet)
        ptype = reader.u8()
        if ptype == _INIT:
            reader.u32()
            return
        if ptype in _REPLY_TYPES or ptype == _VERSION:
            raise SftpAuditError(f"client sent a server packet (type {ptype})")
        request_id = reader.u32()
        if ptype == _OPEN:
            path = reader.path()
            self._track(request_id, _Pending("open", path=path, pflags=reader.u32()))
        elif ptype == _OPENDIR:
            self._track(request_id, _Pending("opendir", path=reader.path()))
        elif ptype in (_READ, _WRITE, _READDIR, _CLOSE, _FSETSTAT):
            self._on_handle_request(ptype, request_id, reader)
        elif ptype in (_REMOVE, _MKDIR, _RMDIR):
            op = {_REMOVE: "remove", _MKDIR: "mkdir", _RMDIR: "rmdir"}[ptype]
            self._path_op(request_id, op, reader.path())
        elif ptype == _SETSTAT:
            path = reader.path()
            self._path_op(request_id, "setstat", path, _attrs_summary(reader))
        elif ptype == _RENAME:
            old, new = reader.path(), reader.path()
            self._path_op(request_id, "rename", old, f"-> {new}")
        elif ptype == _SYMLINK:
            # OpenSSH sends (target, linkpath): the reverse of draft-02, see its PROTOCOL.
            target, link = reader.path(), reader.path()
            self._path_op(request_id, "symlink", link, f"-> {target}")
        elif ptype == _EXTENDED:
            self._on_extended(request_id, reader)
        # LSTAT, FSTAT, STAT, REALPATH, READLINK and unknown types change nothing.

    def _on_handle_request(self, ptype: int, request_id: int, reader: _Reader) -> None:
        key = reader.string()
        handle = self._handles.get(key)
        if handle is None:
            return  # opened before auditing started, or never opened: nothing to add to
        if ptype == _READ:
            handle.reads += 1
            self._track(request_id, _Pending("read", handle=key))
        elif ptype == _WRITE:
            reader.u64()
            handle.writes += 1
            self._track(request_id, _Pending("write", handle=key, length=reader.skip_string()))
        elif ptype == _READDIR:
            self._track(request_id, _Pending("readdir", handle=key))
        elif ptype == _CLOSE:
            self._track(request_id, _Pending("close", handle=key))
        else:  # FSETSTAT
            self._path_op(request_id, "setstat", handle.path, _attrs_summary(reader))

    def _on_extended(self, request_id: int, reader: _Reader) -> None:
        name = reader.string()
        if name == b"posix-rename@openssh.com":
            old, new = reader.path(), reader.path()
            self._path_op(request_id, "rename", old, f"-> {new}")
        elif name == b"hardlink@openssh.com":
            old, new = reader.path(), reader.path()
            self._path_op(request_id, "symlink", new, f"hard link -> {old}")
        elif name == b"lsetstat@openssh.com":
            path = reader.path()
            self._path_op(request_id, "setstat", path, _attrs_summary(reader))
        elif name == b"copy-data@openssh.com":
            source = reader.string()
            reader.u64()
            length = reader.u64()
            dest = reader.string()
            self._track(
                request_id,
                _Pending("copy", handle=source, other_handle=dest, length=length),
            )

    # -- server to client ---------------------------------------------------------

    def _on_server_packet(self, packet: bytes, events: list[FileEvent]) -> None:
        reader = _Reader(packet)
        ptype = reader.u8()
        if ptype == _VERSION:
            self._version = reader.u32()
            if self._version != 3:
                raise SftpAuditError(f"SFTP version {self._version} is not audited (only 3)")
            return
        if ptype not in _REPLY_TYPES:
            if ptype in (_INIT, _EXTENDED) or ptype <= _SYMLINK:
                raise SftpAuditError(f"server sent a client packet (type {ptype})")
            return  # unknown reply types from extensions are not ours to judge
        pending = self._pending.pop(reader.u32(), None)
        if pending is None:
            return
        if ptype == _STATUS:
            code = reader.u32()
            message = b"" if reader.at_end() else reader.string()
            self._on_status(pending, code, message, events)
        elif ptype == _HANDLE and pending.kind in ("open", "opendir"):
            self._on_new_handle(pending, reader.string(), events)
        elif ptype == _DATA and pending.kind == "read":
            handle = self._handles.get(pending.handle)
            length = reader.skip_string()
            if handle is not None:
                handle.read_bytes += length
        elif ptype == _NAME and pending.kind == "readdir":
            handle = self._handles.get(pending.handle)
            count = reader.u32()
            if handle is not None:
                handle.entries += count
        else:
            raise SftpAuditError(f"{_TYPE_NAMES[ptype]} reply to a {pending.kind} request")

    def _on_new_handle(self, pending: _Pending, key: bytes, events: list[FileEvent]) -> None:
        if len(key) > _MAX_HANDLE_BYTES:
            raise SftpAuditError(f"server handle of {len(key)} bytes (limit 256)")
        previous = self._handles.pop(key, None)
        if previous is not None:
            events.extend(self._finish(previous, ok=False, note="handle reused by server"))
        if len(self._handles) >= self._max_handles:
            raise SftpAuditError(f"more than {self._max_handles} handles open")
        is_dir = pending.kind == "opendir"
        self._handles[key] = _Handle(pending.path, is_dir, pflags=pending.pflags)

    def _on_status(
        self, pending: _Pending, code: int, message: bytes, events: list[FileEvent]
    ) -> None:
        ok = code == _FX_OK
        text = "" if ok else _status_text(code, message)
        kind = pending.kind
        if kind == "open":
            detail = f"{text or 'OK without a handle'} (flags {_flag_names(pending.pflags)})"
            events.append(FileEvent("open", pending.path, 0, False, detail))
        elif kind == "opendir":
            events.append(
                FileEvent("listdir", pending.path, 0, False, text or "OK without a handle")
            )
        elif kind == "path_op":
            events.append(FileEvent(pending.op, pending.path, 0, ok, _join(pending.detail, text)))
        elif kind == "close":
            handle = self._handles.pop(pending.handle, None)
            if handle is not None:
                events.extend(self._finish(handle, ok=ok, note=text))
        elif kind == "copy":
            self._on_copy_status(pending, ok, text)
        else:  # read, write, readdir
            handle = self._handles.get(pending.handle)
            if handle is None:
                return
            if kind == "write" and ok:
                handle.written_bytes += pending.length
            elif code not in (_FX_OK, _FX_EOF) and not handle.error:
                handle.error = f"{kind} failed: {text}"

    def _on_copy_status(self, pending: _Pending, ok: bool, text: str) -> None:
        source = self._handles.get(pending.handle)
        dest = self._handles.get(pending.other_handle)
        if not ok:
            if dest is not None and not dest.error:
                dest.error = f"copy-data failed: {text}"
            return
        if source is not None and not source.copy_note:
            source.copy_note = "server-side copy source"
        if dest is not None:
            origin = source.path if source is not None else "an unknown handle"
            dest.copy_note = f"server-side copy from {origin}"
            dest.copied_bytes += pending.length  # 0 means "to end of file": size unknown

    def _finish(self, handle: _Handle, *, ok: bool, note: str) -> list[FileEvent]:
        """Turn a closed (or abandoned) handle into the events it stands for."""
        ok = ok and not handle.error
        detail = _join(handle.error, note)
        path = handle.path
        if handle.is_dir:
            return [FileEvent("listdir", path, 0, ok, _join(f"{handle.entries} entries", detail))]
        events: list[FileEvent] = []
        if handle.writes:
            events.append(FileEvent("upload", path, handle.written_bytes, ok, detail))
        if handle.reads:
            events.append(FileEvent("download", path, handle.read_bytes, ok, detail))
        if handle.copy_note:
            note_detail = _join(handle.copy_note, detail)
            events.append(FileEvent("open", path, handle.copied_bytes, ok, note_detail))
        if not events:
            if handle.pflags & (_CREAT | _TRUNC):
                # Created or truncated with no data written: an upload of an empty file.
                events.append(FileEvent("upload", path, 0, ok, detail))
            else:
                flags = f"flags {_flag_names(handle.pflags)}"
                events.append(FileEvent("open", path, 0, ok, _join(flags, detail)))
        return events
