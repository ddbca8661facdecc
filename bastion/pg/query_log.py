"""What a database session leaves in its recording: ``pg.query`` and ``pg.rows`` events.

``query_payload`` turns a tracker ``QueryRecord`` into the JSON the recorder
stores (the contract the TUI and ``bastion export --format jsonl`` read; readers
use ``bastion.pg.query_event``, where the event names live). ``QueryLog`` writes
them: the text of a named prepared statement once per recording chunk, and a
reference to that event (``sql_ref``) for its later executions.
``RowCapture`` optionally keeps a bounded sample of result rows (and COPY TO
STDOUT lines), with masked values replaced *before* anything reaches the
recording: which columns are masked comes from a ``MaskSource`` that follows each
value to its origin (``bastion.pg.masking``), or, without one, from the output
names alone; ``mask_patterns`` regexes mask values by content.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from math import isfinite
from typing import Final, Protocol

from bastion.pg.messages import (
    CommandComplete,
    CopyData,
    CopyOutResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    PortalSuspended,
    RowDescription,
    TransactionStatus,
)
from bastion.pg.origins import Output, statement_outputs
from bastion.pg.params import Param
from bastion.pg.query_event import MAX_REF_GAP, QUERY_EVENT, ROWS_EVENT, searchable_queries
from bastion.pg.tracker import QueryRecord
from recorder.events import JSONValue

__all__ = [
    "QUERY_EVENT",
    "ROWS_EVENT",
    "MaskRules",
    "MaskSource",
    "PlanKey",
    "QueryLog",
    "QuerySink",
    "RowCapture",
    "query_json",
    "query_payload",
    "searchable_queries",
]

MASKED = "***"
_MAX_SQL = 256 * 1024
_MAX_PARAM = 4096
_MAX_VALUE = 1024

_TX_NAMES = {
    TransactionStatus.IDLE: "idle",
    TransactionStatus.IN_TRANSACTION: "in-transaction",
    TransactionStatus.FAILED: "failed",
}


_MAX_PARAMS_TOTAL = 256 * 1024


def _utf8(text: str) -> str:
    """``text`` made encodable: bytes that were not UTF-8 (kept as surrogates by the
    decoder, e.g. a latin1 client) become U+FFFD; ``_raw`` keeps them exactly."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _raw(text: str) -> str | None:
    """Hex of the original bytes when ``_utf8`` had to replace some, else None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").hex()
    return None


def _param(value: Param) -> JSONValue:
    if value is None:
        return None
    if isinstance(value, str):
        value = _utf8(value)
        return value if len(value) <= _MAX_PARAM else value[:_MAX_PARAM] + "…"
    data = value[: _MAX_PARAM // 2]
    out: dict[str, JSONValue] = {"hex": data.hex()}
    if len(value) > len(data):
        out["length"] = len(value)
    return out


def query_payload(seq: int, rec: QueryRecord, sql_ref: int | None = None) -> dict[str, JSONValue]:
    """The ``pg.query`` payload of one record (times are seconds since session start).

    With ``sql_ref`` (the ``seq`` of an earlier event that carries this record's
    text) the text is left out: ``"sql": null`` and ``"sql_ref"``.
    """
    sql = rec.sql if sql_ref is None else None
    sql_hex = None
    if sql is not None:
        sql_hex = _raw(sql)
        sql = _utf8(sql)
        if len(sql) > _MAX_SQL:
            sql = sql[:_MAX_SQL] + "…"
            sql_hex = sql_hex[: 2 * _MAX_SQL] if sql_hex else None
    error: JSONValue = None
    if rec.error_sqlstate is not None or rec.error_message is not None:
        message = _utf8(rec.error_message) if rec.error_message is not None else None
        error = {"sqlstate": rec.error_sqlstate, "message": message}
    params: list[JSONValue] = []
    budget = _MAX_PARAMS_TOTAL
    for p in rec.params:
        if budget <= 0:
            params.append({"omitted": len(rec.params) - len(params)})
            break
        params.append(_param(p))
        budget -= len(p) if p is not None else 1
    copy: JSONValue = None
    if rec.copy_direction is not None:
        copy = {
            "direction": rec.copy_direction,
            "bytes": rec.copy_bytes,
            "messages": rec.copy_messages,
        }
    payload: dict[str, JSONValue] = {
        "seq": seq,
        "kind": rec.kind,
        "sql": sql,
        "params": params,
        "statement": _utf8(rec.statement) if rec.statement is not None else None,
        "portal": _utf8(rec.portal) if rec.portal is not None else None,
        "tag": _utf8(rec.tag) if rec.tag is not None else None,
        "tags": [_utf8(t) for t in rec.tags],
        "rows": rec.rows,
        "error": error,
        "start": round(rec.started_at, 6),
        "duration_ms": round(max(0.0, rec.finished_at - rec.started_at) * 1000, 3),
        "tx": _TX_NAMES.get(rec.tx_status) if rec.tx_status is not None else None,
        "completed": rec.completed,
        "suspended": rec.suspended,
        "copy": copy,
    }
    if rec.function_oid is not None:
        payload["function_oid"] = rec.function_oid
    if sql_hex is not None:
        payload["sql_hex"] = sql_hex  # the exact bytes, when the text is not UTF-8
    if sql_ref is not None:
        payload["sql_ref"] = sql_ref
    return payload


_MAX_FAST_PARAMS = _MAX_PARAMS_TOTAL // _MAX_PARAM  # this many short params never meet the budget


def _json_text(text: str | None) -> str:
    """A JSON string (or null) exactly as the canonical encoder writes it (``ensure_ascii``
    off: it uses this same function)."""
    return "null" if text is None else encode_basestring(text)


def query_json(seq: int, rec: QueryRecord, sql_ref: int | None = None) -> bytes | None:
    """``canonical_json(query_payload(seq, rec, sql_ref))`` for the common record, built
    directly.

    Why: the payload dict and the generic sorted-key encoder were about a third of
    the relay's CPU per statement (issue 17). None when the record is not the common
    shape (non-ASCII text, an error, COPY, a function call, binary or many
    parameters, an overlong statement): the caller then takes ``query_payload``.
    Keys are written in sorted order; ``tests/bastion/pg/test_query_json.py`` checks
    byte equality with the canonical encoding over generated records.
    """
    sql = rec.sql if sql_ref is None else None
    if sql is not None and (len(sql) > _MAX_SQL or not sql.isascii()):
        return None
    if (
        rec.error_sqlstate is not None
        or rec.error_message is not None
        or rec.copy_direction is not None
        or rec.function_oid is not None
    ):
        return None
    params = rec.params
    if len(params) > _MAX_FAST_PARAMS:
        return None
    listed: list[str] = []
    for value in params:
        if value is None:
            listed.append("null")
        elif isinstance(value, str) and len(value) <= _MAX_PARAM and value.isascii():
            listed.append(encode_basestring(value))
        else:
            return None
    statement, portal, tag, tags = rec.statement, rec.portal, rec.tag, rec.tags
    for text in (statement, portal, tag, *tags):
        if text is not None and not text.isascii():
            return None
    rows = "null" if rec.rows is None else repr(rec.rows)
    tx = rec.tx_status
    tx_name = _TX_NAMES.get(tx) if tx is not None else None
    duration = round(max(0.0, rec.finished_at - rec.started_at) * 1000, 3)
    start = round(rec.started_at, 6)
    if not (isfinite(duration) and isfinite(start)):
        return None  # the canonical encoder refuses these: let it say so
    ref = "" if sql_ref is None else f'"sql_ref":{sql_ref!r},'
    return (
        f'{{"completed":{"true" if rec.completed else "false"},"copy":null,'
        f'"duration_ms":{duration!r},"error":null,'
        f'"kind":{encode_basestring(rec.kind)},"params":[{",".join(listed)}],'
        f'"portal":{_json_text(portal)},"rows":{rows},"seq":{seq!r},'
        f'"sql":{_json_text(sql)},{ref}"start":{start!r},'
        f'"statement":{_json_text(statement)},'
        f'"suspended":{"true" if rec.suspended else "false"},"tag":{_json_text(tag)},'
        f'"tags":[{",".join(map(encode_basestring, tags))}],"tx":{_json_text(tx_name)}}}'
    ).encode()


_MAX_NAMES: Final = 4096
"""Prepared statement names a ``QueryLog`` remembers (more: it forgets them all)."""


class QuerySink(Protocol):
    """Where ``QueryLog`` writes: a ``LiveRecording`` or a ``RecordingWriter``."""

    def event(self, name: str, payload: JSONValue, chunk: int | None = None) -> int:
        """Record; the chunk it went into, 0 if not ``chunk`` (nothing recorded), -1 if
        the recording failed."""
        ...

    def encoded_event(self, name: str, data: bytes, chunk: int | None = None) -> int:
        """``event`` with the payload as ``canonical_json`` bytes (``query_json``)."""
        ...


class QueryLog:
    """Writes one session's ``pg.query`` events; a prepared statement's text once.

    A record of a named statement (``statement`` not empty: ``pgbench -M prepared``,
    psycopg's ``prepare``, asyncpg) whose text was recorded for that name in the
    chunk being filled, fewer than ``MAX_REF_GAP`` queries back, is written as a
    reference to that event; the writer checks the chunk under its lock and a
    chunk cut meanwhile gets the text again. So every chunk carries the text of
    the statements its events refer to (``bastion.pg.query_event``). A re-Parse of
    the name with another text (after Close or DEALLOCATE) records the new text.
    Unnamed statements and simple queries always carry their text.
    """

    __slots__ = ("_named",)

    def __init__(self) -> None:
        self._named: dict[str, tuple[str, int, int]] = {}
        """name -> (text, seq of the event that carries it, its chunk)"""

    def record(self, sink: QuerySink, seq: int, rec: QueryRecord) -> None:
        """Write the ``pg.query`` event of ``rec`` (the session's ``seq``-th) to ``sink``."""
        name = rec.statement
        sql = rec.sql
        if not name or sql is None:
            _write(sink, seq, rec)
            return
        named = self._named
        known = named.get(name)
        if (
            known is not None
            and seq - known[1] < MAX_REF_GAP
            and (known[0] is sql or known[0] == sql)
            and _write(sink, seq, rec, known[1], known[2]) != 0
        ):
            return
        chunk = _write(sink, seq, rec)
        if chunk > 0:
            if len(named) >= _MAX_NAMES and name not in named:
                named.clear()
            named[name] = (sql, seq, chunk)


def _write(
    sink: QuerySink,
    seq: int,
    rec: QueryRecord,
    sql_ref: int | None = None,
    chunk: int | None = None,
) -> int:
    """One ``pg.query`` event: encoded directly when ``query_json`` can, else canonically."""
    data = query_json(seq, rec, sql_ref)
    if data is None:
        return sink.event(QUERY_EVENT, query_payload(seq, rec, sql_ref), chunk)
    return sink.encoded_event(QUERY_EVENT, data, chunk)


@dataclass(frozen=True)
class MaskRules:
    """Column-name patterns (shell-style, case-insensitive) whose values are never recorded."""

    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        compiled = tuple(re.compile(fnmatch.translate(p.lower())) for p in self.patterns)
        object.__setattr__(self, "_compiled", compiled)

    def masks(self, column: str) -> bool:
        """True if values of ``column`` must be replaced."""
        name = column.lower()
        return any(c.match(name) for c in self._compiled)


FieldKey = tuple[str, int, int]
"""(output name, table OID, attribute number) of one RowDescription field."""
PlanKey = tuple[str | None, int, tuple[FieldKey, ...]]
"""(statement text or None, index of the statement in it, fields) of one result."""
Flags = tuple[bool, ...]


class MaskSource(Protocol):
    """Decides which columns of a result to mask from where their values come from."""

    def request(
        self, key: PlanKey, copy_columns: int | None, done: Callable[[Flags], None]
    ) -> Flags | None:
        """The flags now if known, else None and ``done(flags)`` later (exactly once)."""


@dataclass
class _Desc:
    columns: list[str]
    binary: list[bool]
    flags: Flags | None
    copy: Output | None = None  # the COPY statement, for CopyData rows


@dataclass
class _Set:
    desc: _Desc
    rows: list[list[bytes | None] | bytes]
    seen: int
    tag: str | None


class RowCapture:
    """A bounded sample of each result set, masked, as ``pg.rows`` payloads.

    Feed every server message with ``backend`` (and ``source`` with the statement
    the next RowDescription or CopyOutResponse answers). At most ``max_rows``
    rows per result set are kept, each value cut to 1 KiB. Without a ``MaskSource``
    columns are masked by output name only and ``backend`` returns each payload.
    With one, the origin of every column decides; a set whose flags are still
    being resolved is held (raw, bounded) and the payloads go to ``emit`` in
    stream order once known. Values matching a ``patterns`` regex are masked
    whatever their column.
    """

    def __init__(
        self,
        max_rows: int,
        rules: MaskRules,
        patterns: Sequence[re.Pattern[str]] = (),
        masks: MaskSource | None = None,
        emit: Callable[[dict[str, JSONValue]], None] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.rules = rules
        self.patterns = tuple(patterns)
        self.masks = masks
        self.emit = emit
        self.source: tuple[str | None, int] = (None, 0)
        self._desc: _Desc | None = None
        self._rows: list[list[bytes | None] | bytes] = []
        self._seen = 0
        self._open = False
        self._count = 0
        self._queue: deque[_Set] = deque()
        self._expect: tuple[str | None, int] | None = None

    @property
    def checking(self) -> bool:
        """True until the first row of a described result has been matched to its statement."""
        return self._expect is not None

    def first_row(self, source: tuple[str | None, int]) -> None:
        """The statement the first DataRow after a description belongs to: a description
        of one statement followed by rows of another (Describe S1, Execute S2) masks
        the whole set rather than apply S1's plan to S2's values."""
        expect, self._expect = self._expect, None
        if expect != source and self._desc is not None:
            width = len(self._desc.columns)
            self._desc = _Desc(self._desc.columns, self._desc.binary, (True,) * width)

    @property
    def pending(self) -> int:
        """Result sets held until their masking is known."""
        return len(self._queue)

    def backend(self, msg: object) -> dict[str, JSONValue] | None:
        """Note one server message; a ``pg.rows`` payload when a result set is complete
        (without ``emit``; with it the payloads go there)."""
        if isinstance(msg, DataRow):
            self._seen += 1
            if self._open and len(self._rows) < self.max_rows:
                self._rows.append([None if v is None else v[: _MAX_VALUE + 1] for v in msg.values])
            return None
        if isinstance(msg, CopyData):
            if self._open and self._desc is not None and self._desc.copy is not None:
                self._seen += 1
                if len(self._rows) < self.max_rows:
                    self._rows.append(msg.data)
            return None
        if isinstance(msg, RowDescription):
            self._start(self._describe(msg))
            return None
        if isinstance(msg, CopyOutResponse):
            self._start(self._copy(msg))
            return None
        if isinstance(msg, CommandComplete | PortalSuspended | EmptyQueryResponse | ErrorResponse):
            if not self._open or self._desc is None:
                return None
            tag = msg.tag if isinstance(msg, CommandComplete) else None
            self._queue.append(_Set(self._desc, self._rows, self._seen, tag))
            # A suspended portal continues with more DataRows and no new RowDescription.
            self._open = isinstance(msg, PortalSuspended)
            self._rows, self._seen = [], 0
            return self._drain()
        return None

    def fail_closed(self) -> None:
        """Mask every column of the sets still waiting (the session is ending)."""
        for item in self._queue:
            if item.desc.flags is None:
                item.desc.flags = (True,) * len(item.desc.columns)
        self._drain()

    def _start(self, desc: _Desc) -> None:
        self._desc = desc
        self._rows, self._seen, self._open = [], 0, True

    def _describe(self, msg: RowDescription) -> _Desc:
        columns = [_utf8(f.name) for f in msg.fields]
        binary = [f.format == 1 for f in msg.fields]
        if self.masks is None:
            return _Desc(columns, binary, tuple(self.rules.masks(c) for c in columns))
        sql, index = self.source
        self._expect = self.source
        key: PlanKey = (sql, index, tuple((f.name, f.table_oid, f.column) for f in msg.fields))
        desc = _Desc(columns, binary, None)
        desc.flags = self.masks.request(key, None, self._resolver(desc))
        return desc

    def _copy(self, msg: CopyOutResponse) -> _Desc:
        sql, index = self.source
        outputs = statement_outputs(sql) if sql is not None else ()
        output = outputs[index] if index < len(outputs) else Output(None, "unknown")
        width = len(msg.column_formats)
        columns = [f"#{i + 1}" for i in range(width)]
        binary = [False] * width
        if msg.format == 1 or output.copy_format == "binary" or self.masks is None:
            # binary COPY cannot be split here; without origins nothing is known
            return _Desc(columns, binary, (True,) * width, output)
        desc = _Desc(columns, binary, None, output)
        key: PlanKey = (sql, index, (("COPY", -1, width),))
        desc.flags = self.masks.request(key, width, self._resolver(desc))
        return desc

    def _resolver(self, desc: _Desc) -> Callable[[Flags], None]:
        def done(flags: Flags) -> None:
            desc.flags = flags
            self._drain()

        return done

    def _drain(self) -> dict[str, JSONValue] | None:
        last = None
        while self._queue and self._queue[0].desc.flags is not None:
            payload = self._payload(self._queue.popleft())
            if self.emit is not None:
                self.emit(payload)
            else:
                last = payload
        return last

    def _payload(self, item: _Set) -> dict[str, JSONValue]:
        self._count += 1
        desc = item.desc
        flags = desc.flags or ()
        columns = desc.columns
        rows: list[JSONValue] = [
            self._copy_row(r, desc) if isinstance(r, bytes) else self._row(r, desc)
            for r in item.rows
        ]
        return {
            "set": self._count,
            "columns": list(columns),
            "masked": [c for c, m in zip(columns, flags, strict=False) if m],
            "rows": rows,
            "total": item.seen,
            "truncated": item.seen > len(item.rows),
            "tag": item.tag,
        }

    def _row(self, values: Sequence[bytes | None], desc: _Desc) -> list[JSONValue]:
        flags, binary = desc.flags or (), desc.binary
        row: list[JSONValue] = []
        for i, value in enumerate(values):
            if value is None:
                row.append(None)
            elif i >= len(flags) or flags[i] or self._matches(value):
                row.append(MASKED)
            elif i < len(binary) and binary[i]:
                row.append({"hex": value[: _MAX_VALUE // 2].hex()})
            else:
                text = value[:_MAX_VALUE].decode("utf-8", "replace")
                row.append(text + ("…" if len(value) > _MAX_VALUE else ""))
        return row

    def _copy_row(self, data: bytes, desc: _Desc) -> list[JSONValue]:
        """One CopyData line split into fields (text or CSV); a line that does not
        split into the described columns is masked whole."""
        width = len(desc.columns)
        output = desc.copy
        fields: list[bytes | None] | None = None
        if output is not None and output.copy_format == "text":
            delim = (output.copy_delimiter or "\t").encode()
            delim = b"\t" if delim == b"\\t" else delim
            parts = data.rstrip(b"\n").split(delim)
            fields = [None if p == b"\\N" else p for p in parts]
        elif output is not None and output.copy_format == "csv":
            line = data.decode("utf-8", "replace").rstrip("\r\n")
            try:
                parsed = next(csv.reader([line], delimiter=output.copy_delimiter or ","))
            except (csv.Error, StopIteration):
                parsed = None
            fields = [p.encode() for p in parsed] if parsed is not None else None
        if fields is None or len(fields) != width:
            return [MASKED] * width
        return self._row(fields, desc)

    def _matches(self, value: bytes) -> bool:
        if not self.patterns:
            return False
        text = value[:_MAX_VALUE].decode("utf-8", "replace")
        return any(p.search(text) for p in self.patterns)
