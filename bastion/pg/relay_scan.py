"""The relay's fused scanners: framing, validation and query tracking in one pass.

After login the relay forwards every byte unchanged, so it only needs from
each message what the ``QueryTracker`` (and the row capture) use: the SQL of a
Query or Parse, the tag of a CommandComplete, the status of a ReadyForQuery...
The general parsers in ``protocol`` build a typed message object for every
message, through several method calls each; at pgbench rates that was most of
the bastion's CPU per transaction. These scanners walk the buffer in one loop,
check each frame's header against the same limits as ``protocol`` before its
body is buffered, decode the few fields the tracker needs straight from the
buffer for the frequent message types, and hand everything else to the general
decoders (``decode_frontend``/``decode_backend``) unchanged.

Still sans-IO: bytes in, tracker calls and records out. The differential tests
(``tests/bastion/pg/test_relay_scan.py``) feed the same streams, valid and
mutated, to these scanners and to parser + tracker and require the same records
and the same accept/refuse outcome.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from bastion.pg.decoding import (
    BACKEND_BODY_LIMITS,
    FRONTEND_BODY_LIMITS,
    decode_backend,
    decode_frontend,
)
from bastion.pg.errors import PROGRAM_LIMIT_EXCEEDED, ProtocolViolation
from bastion.pg.messages import CopyOutResponse, DataRow, RowDescription, TransactionStatus
from bastion.pg.query_log import RowCapture
from bastion.pg.tracker import QueryRecord, QueryTracker
from recorder.events import JSONValue

__all__ = ["BAD", "ClientScanner", "Frame", "ServerScanner", "frontend_bounds"]

_HEADER: Final = struct.Struct("!Bi")
_I32: Final = struct.Struct("!i")
_U16: Final = struct.Struct("!H")
_NEVER: Final = (1, 0)  # the bounds of an unknown type: no size fits
RUN: Final = 0x100
"""Flag on a ``_split`` entry that stands for a run of frames of one type."""
BAD: Final = 0x200
"""Flag on the last entry of a frame list that ``StatementGate`` hands over: a header
outside the bounds, ``(type | BAD, length, offset)``; the scanner raises for it."""
Frame = tuple[int, int, int]
"""(type byte, body start, body end) in a buffer, or a ``RUN``/``BAD`` entry."""
_STATUS: Final = {ord(s.value): s for s in TransactionStatus}

# Per type byte: (smallest body, largest body or -1 for the scanner's maximum).
_Limits = dict[int, tuple[int, int]]


def _limits(table: dict[int, tuple[int, int | None]]) -> _Limits:
    return {t: (low, -1 if high is None else high) for t, (low, high) in table.items()}


def _bounds(limits: _Limits, max_message_length: int) -> _Limits:
    """Legal body sizes per type with the maximum folded in: one range check per frame."""
    return {
        t: (low, min(high, max_message_length) if high >= 0 else max_message_length)
        for t, (low, high) in limits.items()
    }


def _show(type_byte: int) -> str:
    char = chr(type_byte)
    return repr(char) if char.isprintable() and type_byte < 128 else str(type_byte)


def _text(body: bytes, what: str) -> str:
    """A body that is exactly one NUL-terminated string."""
    if body.find(b"\x00") != len(body) - 1:
        raise ProtocolViolation(f"invalid {what} message: string is not NUL-terminated")
    return body[:-1].decode("utf-8", "surrogateescape")


def _run_of(buf: bytes, pos: int, type_byte: int, low: int, high: int) -> tuple[int, int, int]:
    """Where the run of whole ``type_byte`` frames at ``pos`` ends, its frames, their body bytes.

    The rest of a run (a result's rows, a COPY's lines) in a loop that checks only
    what ``_split`` would: a frame of another type, a length outside ``low..high``
    (body bytes) or an incomplete frame ends the run, and ``_split`` looks at it.
    """
    unpack = _HEADER.unpack_from
    size = len(buf)
    low4, high4 = low + 4, high + 4
    n = total = 0
    while size - pos >= 5:
        next_type, length = unpack(buf, pos)
        end = pos + 1 + length
        if next_type != type_byte or not low4 <= length <= high4 or end > size:
            break
        n += 1
        total += length
        pos = end
    return pos, n, total - 4 * n


class _Scanner:
    """Framing shared by both directions: an unparsed tail, limits, a failed state."""

    _direction = ""

    def __init__(self, limits: _Limits, max_message_length: int) -> None:
        self._limits = limits
        self._max = max_message_length
        self._bounds = _bounds(limits, max_message_length)
        self._tail = bytearray()  # the start of a message still incomplete
        self._need = 0  # the tail's length at which that message is complete
        self._forwarded = 0  # bytes of the tail that came before this feed
        self._stuck = 0  # after a failure: bytes of an unfinished message passed on
        self._error: ProtocolViolation | None = None
        self._bad: ProtocolViolation | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message seen so far (0: the stream is at a boundary).

        After a ProtocolViolation: the bytes of the unfinished message that came
        before the failing feed (a relay has passed those on, so it is not at a
        boundary unless this is 0).
        """
        return self._stuck if self._error is not None else len(self._tail)

    def _start(self, data: bytes) -> bytes | None:
        """The bytes to split now, or None while the message in the tail is incomplete.

        A large message arrives in many reads; they are appended (linear time) and
        split once, when the message is whole.
        """
        self._check_alive()
        tail = self._tail
        self._forwarded = len(tail)
        if not tail:
            return data
        tail += data
        if len(tail) < self._need:
            return None
        return bytes(tail)

    def _check_alive(self) -> None:
        """Raise if an earlier feed failed: the stream's framing is lost."""
        if self._error is not None:
            raise ProtocolViolation(
                f"{self._direction} stream already failed: {self._error.message}",
                self._error.sqlstate,
            ) from self._error

    def _split(self, buf: bytes, runs: frozenset[int] = frozenset()) -> list[Frame]:
        """The complete frames of ``buf`` as (type, body start, end); keeps the rest.

        Consecutive frames of a type in ``runs`` come as one entry
        ``(type | RUN, count, body bytes)``: a result's rows are counted, not looked
        at, and one entry per row was most of a bulk transfer's cost.

        Headers are checked before their bodies are waited for. A bad header ends
        the list and is kept in ``_bad`` for ``feed`` to raise once the frames
        before it are handled (they reached the scanner first).
        """
        frames: list[Frame] = []
        bounds = self._bounds
        unpack = _HEADER.unpack_from
        pos, size = 0, len(buf)
        run_type = run_count = run_bytes = 0
        while size - pos >= 5:
            type_byte, length = unpack(buf, pos)
            low, high = bounds.get(type_byte, _NEVER)
            if not low <= length - 4 <= high:
                self._bad = self._violation(type_byte, length)
                break
            end = pos + 1 + length
            if end > size:
                break
            if type_byte in runs:
                if type_byte != run_type:
                    if run_count:
                        frames.append((run_type | RUN, run_count, run_bytes))
                    run_type, run_count, run_bytes = type_byte, 0, 0
                run_count += 1
                run_bytes += length - 4
                pos, n, body_bytes = _run_of(buf, end, type_byte, low, high)
                run_count += n
                run_bytes += body_bytes
                continue
            else:
                if run_count:
                    frames.append((run_type | RUN, run_count, run_bytes))
                    run_type = run_count = 0
                frames.append((type_byte, pos + 5, end))
            pos = end
        if run_count:
            frames.append((run_type | RUN, run_count, run_bytes))
        if pos < size:
            self._tail = bytearray(buf[pos:])
            if self._bad is None and size - pos >= 5:  # an incomplete message: its length
                self._need = 1 + _HEADER.unpack_from(buf, pos)[1]
                return frames
        elif self._tail:
            self._tail = bytearray()
        self._need = 5
        return frames

    def _violation(self, type_byte: int, length: int) -> ProtocolViolation:
        """The error for a header outside ``_bounds`` (the checks of ``protocol``)."""
        if type_byte not in self._limits:
            return ProtocolViolation(f"invalid {self._direction} message type {_show(type_byte)}")
        size = length - 4
        low, high = self._limits[type_byte]
        if size < low or (high >= 0 and size > high):
            return ProtocolViolation(
                f"invalid length {length} of {self._direction} message {_show(type_byte)}"
            )
        return ProtocolViolation(
            f"{self._direction} message {_show(type_byte)} of {size} bytes exceeds "
            f"the limit of {self._max} (max_message_bytes)",
            PROGRAM_LIMIT_EXCEEDED,
        )

    def _check_rest(self) -> None:
        """Raise the bad header ``_split`` found, if any."""
        if self._bad is not None:
            raise self._fail(self._bad)

    def _fail(self, error: ProtocolViolation) -> ProtocolViolation:
        self._error = error
        self._stuck = self._forwarded
        self._tail = bytearray()
        return error


_FRONTEND_LIMITS: Final = _limits({t: v for t, v in FRONTEND_BODY_LIMITS.items() if t != ord("p")})
_BACKEND_LIMITS: Final = _limits(dict(BACKEND_BODY_LIMITS))


def frontend_bounds(max_message_length: int) -> dict[int, tuple[int, int]]:
    """The body sizes ``ClientScanner`` accepts per message type (a type not listed: none).

    ``StatementGate`` frames the client's stream with these, so a header it passes
    is one the scanner accepts, and the scanner can take its frames as they are.
    """
    return _bounds(_FRONTEND_LIMITS, max_message_length)


def _cstr(body: bytes, pos: int, what: str) -> tuple[str, int]:
    """The NUL-terminated string at ``pos`` and the offset after it."""
    nul = body.find(b"\x00", pos)
    if nul < 0:
        raise ProtocolViolation(f"invalid {what} message: string is not NUL-terminated")
    return body[pos:nul].decode("utf-8", "surrogateescape"), nul + 1


def _array(body: bytes, pos: int, code: str, width: int, what: str) -> tuple[tuple[int, ...], int]:
    """A u16 count then that many integers of ``code``; the array and the offset after."""
    if pos + 2 > len(body):
        raise ProtocolViolation(f"invalid {what} message: truncated")
    (count,) = _U16.unpack_from(body, pos)
    pos += 2
    end = pos + count * width
    if end > len(body):
        raise ProtocolViolation(f"invalid {what} message: truncated")
    return struct.unpack_from(f"!{count}{code}", body, pos), end


def _parse(body: bytes) -> tuple[str, str, tuple[int, ...]]:
    """Parse: statement name, SQL, parameter type OIDs (as ``decoding`` checks them)."""
    name, pos = _cstr(body, 0, "Parse")
    sql, pos = _cstr(body, pos, "Parse")
    oids, pos = _array(body, pos, "I", 4, "Parse")
    if pos != len(body):
        raise ProtocolViolation(f"invalid Parse message: {len(body) - pos} unexpected bytes")
    return name, sql, oids


def _bind(body: bytes) -> tuple[str, str, tuple[int, ...], tuple[bytes | None, ...]]:
    """Bind: portal, statement, parameter formats and values (result formats checked)."""
    portal, pos = _cstr(body, 0, "Bind")
    statement, pos = _cstr(body, pos, "Bind")
    formats, pos = _array(body, pos, "h", 2, "Bind")
    if pos + 2 > len(body):
        raise ProtocolViolation("invalid Bind message: truncated")
    (count,) = _U16.unpack_from(body, pos)
    pos += 2
    values: list[bytes | None] = []
    for _ in range(count):
        if pos + 4 > len(body):
            raise ProtocolViolation("invalid Bind message: truncated")
        (size,) = _I32.unpack_from(body, pos)
        pos += 4
        if size == -1:
            values.append(None)
            continue
        if size < 0:
            raise ProtocolViolation(f"invalid Bind message: invalid value length {size}")
        if pos + size > len(body):
            raise ProtocolViolation("invalid Bind message: truncated")
        values.append(body[pos : pos + size])
        pos += size
    if len(formats) not in (0, 1, count):
        raise ProtocolViolation(
            f"invalid Bind message: {len(formats)} parameter formats but {count} parameters"
        )
    _, pos = _array(body, pos, "h", 2, "Bind")
    if pos != len(body):
        raise ProtocolViolation(f"invalid Bind message: {len(body) - pos} unexpected bytes")
    return portal, statement, formats, tuple(values)


_AFTER_TERMINATE: Final = "client sent data after the end of its conversation"
_Q, _P, _B, _D, _E, _S, _X, _COPY_DATA = (ord(c) for c in "QPBDESXd")


class ClientScanner(_Scanner):
    """What a logged-in client sends, fed to the tracker message by message.

    ``feed`` returns True once the client has sent Terminate (``X``); bytes after
    it are a protocol violation, as in PostgreSQL.
    """

    _direction = "frontend"

    def __init__(self, tracker: QueryTracker, max_message_length: int) -> None:
        super().__init__(_FRONTEND_LIMITS, max_message_length)
        self._tracker = tracker
        self.terminated = False
        """True once Terminate was seen."""

    def feed(self, data: bytes) -> None:
        """Scan ``data`` (more of the client's stream); raises ProtocolViolation."""
        buf = self._start(data)
        if buf is None:
            return
        self._scan(buf, self._split(buf))
        self._check_rest()
        if self.terminated and self._tail:
            raise self._fail(ProtocolViolation(_AFTER_TERMINATE))

    def scan(self, buf: bytes, frames: list[Frame]) -> None:
        """Scan whole messages that ``StatementGate`` already framed; raises ProtocolViolation.

        ``frames`` index ``buf`` and were checked against ``frontend_bounds``; a last
        ``BAD`` entry is the header the gate stopped at, refused here after the frames
        before it, with the error ``feed`` would give. The gate keeps incomplete
        messages, so nothing is buffered here.
        """
        self._check_alive()
        self._forwarded = 0
        bad = None
        if frames and frames[-1][0] & BAD:
            bad = frames[-1]
            frames = frames[:-1]
        self._scan(buf, frames)
        if bad is not None:
            raise self._fail(self._violation(bad[0] & 0xFF, bad[1]))

    def _scan(self, buf: bytes, frames: list[Frame]) -> None:
        tracker = self._tracker
        try:
            for type_byte, start, end in frames:
                if self.terminated:
                    raise ProtocolViolation(_AFTER_TERMINATE)
                body = buf[start:end]
                if type_byte == _B:
                    tracker.bind(*_bind(body))
                elif type_byte == _P:
                    tracker.parse(*_parse(body))
                elif type_byte == _E:
                    tracker.execute(self._execute(body))
                elif type_byte == _S:
                    tracker.sync()
                elif type_byte == _D:
                    kind, name = self._describe(body)
                    tracker.describe(kind, name)
                elif type_byte == _Q:
                    tracker.query(_text(body, "Query"))
                elif type_byte == _COPY_DATA:
                    tracker.copy_data_in(end - start)
                else:
                    tracker.frontend(decode_frontend(type_byte, body))
                    if type_byte == _X:
                        self.terminated = True
        except ProtocolViolation as e:
            raise self._fail(e) from None

    @staticmethod
    def _execute(body: bytes) -> str:
        nul = body.find(b"\x00")
        if nul < 0 or len(body) - nul - 1 != 4:
            raise ProtocolViolation("invalid Execute message: malformed portal or row limit")
        return body[:nul].decode("utf-8", "surrogateescape")

    @staticmethod
    def _describe(body: bytes) -> tuple[str, str]:
        kind = body[0]
        if kind != 83 and kind != 80:  # 'S', 'P'
            raise ProtocolViolation(
                f"invalid Describe message: kind must be 'S' or 'P', got {kind}"
            )
        return chr(kind), _text(body[1:], "Describe")


_DATA_ROW, _ROW_DESC, _NO_DATA, _COMPLETE, _READY = (ord(c) for c in "DTnCZ")
_DATA_ROW_RUN, _COPY_DATA_RUN = _DATA_ROW | RUN, _COPY_DATA | RUN
_COUNTED: Final = frozenset((_DATA_ROW, _COPY_DATA))
"""Server frames only counted while rows are not captured."""
_NONE: Final = frozenset[int]()
_PARSE_DONE, _BIND_DONE, _CLOSE_DONE, _SUSPENDED, _EMPTY = (ord(c) for c in "123sI")


class ServerScanner(_Scanner):
    """What the target sends to a logged-in client, fed to the tracker.

    Query records completed by the bytes (at ReadyForQuery, or an error with
    nothing outstanding) go to ``on_records`` as they complete. With a
    ``RowCapture`` the rows and their descriptions are decoded for it and each
    finished result set goes to ``on_rows``, in stream order with the records;
    without one they are only counted.
    """

    _direction = "backend"

    def __init__(
        self,
        tracker: QueryTracker,
        max_message_length: int,
        on_records: Callable[[list[QueryRecord]], None],
        rows: RowCapture | None = None,
        on_rows: Callable[[dict[str, JSONValue]], None] | None = None,
    ) -> None:
        super().__init__(_BACKEND_LIMITS, max_message_length)
        self._tracker = tracker
        self._on_records = on_records
        self._rows = rows
        self._on_rows = on_rows
        self.ready_seen = 0
        """ReadyForQuery messages scanned (the guardrails match them to denied segments)."""

    def in_flight(self) -> bytes:
        """The start of a message not yet complete (already relayed by the caller)."""
        return bytes(self._tail) if self._error is None else b""

    def feed(self, data: bytes) -> None:  # noqa: C901  one branch per message type
        """Scan ``data`` (more of the server's stream); raises ProtocolViolation."""
        buf = self._start(data)
        if buf is None:
            return
        tracker, rows = self._tracker, self._rows
        try:
            for type_byte, start, end in self._split(buf, _COUNTED if rows is None else _NONE):
                if type_byte == _DATA_ROW_RUN:  # rows not captured: counted only
                    tracker.data_rows(start)
                elif type_byte == _COPY_DATA_RUN:  # a COPY TO's rows: counted only
                    tracker.copy_data_out(end, start)
                elif rows is not None and type_byte in (_DATA_ROW, _ROW_DESC):
                    self._capture(type_byte, buf[start:end])
                elif type_byte == _COMPLETE:
                    tracker.statement_end(_text(buf[start:end], "CommandComplete"), False)
                    if rows is not None:
                        self._capture(type_byte, buf[start:end])
                elif type_byte == _READY:
                    status = _STATUS.get(buf[start])
                    if status is None:
                        raise ProtocolViolation(
                            f"invalid ReadyForQuery message: transaction status {buf[start]}"
                        )
                    self.ready_seen += 1
                    done = tracker.ready(status)
                    if done:
                        self._on_records(done)
                elif type_byte == _PARSE_DONE:
                    tracker.completed("parse")
                elif type_byte == _BIND_DONE:
                    tracker.completed("bind")
                elif type_byte == _ROW_DESC or type_byte == _NO_DATA:
                    tracker.row_description()
                elif type_byte == _CLOSE_DONE:
                    tracker.completed("close")
                else:
                    self._general(type_byte, buf[start:end])
        except ProtocolViolation as e:
            raise self._fail(e) from None
        self._check_rest()

    def _general(self, type_byte: int, body: bytes) -> None:
        msg = decode_backend(type_byte, body)
        if self._rows is not None and isinstance(msg, CopyOutResponse):
            self._rows.source = self._tracker.result_source()
        done = self._tracker.backend(msg)
        if done:
            self._on_records(done)
        if self._rows is not None:
            self._rows_event(msg)

    def _capture(self, type_byte: int, body: bytes) -> None:
        msg = decode_backend(type_byte, body)
        if isinstance(msg, DataRow):
            assert self._rows is not None  # noqa: S101  only when rows are kept
            if self._rows.checking:  # once per described result, not per row
                self._rows.first_row(self._tracker.result_source())
            self._tracker.data_row()
        elif isinstance(msg, RowDescription):
            assert self._rows is not None  # noqa: S101  only when rows are kept
            self._rows.source = self._tracker.result_source()  # before a Describe is popped
            self._tracker.row_description()
        self._rows_event(msg)

    def _rows_event(self, msg: object) -> None:
        assert self._rows is not None  # noqa: S101  only when rows are kept
        payload = self._rows.backend(msg)
        if payload is not None and self._on_rows is not None:
            self._on_rows(payload)
