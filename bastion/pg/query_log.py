"""What a database session leaves in its recording: ``pg.query`` and ``pg.rows`` events.

``query_payload`` turns a tracker ``QueryRecord`` into the JSON the recorder
stores (the contract the TUI and ``bastion export --format jsonl`` read; readers
use ``bastion.pg.query_event``, where the event names live).
``RowCapture`` optionally keeps a bounded sample of result rows, with values of
columns whose names match a masking rule replaced *before* anything reaches
the recording.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastion.pg.messages import (
    CommandComplete,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    PortalSuspended,
    RowDescription,
    TransactionStatus,
)
from bastion.pg.params import Param
from bastion.pg.query_event import QUERY_EVENT, ROWS_EVENT, searchable_queries
from bastion.pg.tracker import QueryRecord
from recorder.events import JSONValue

__all__ = [
    "QUERY_EVENT",
    "ROWS_EVENT",
    "MaskRules",
    "RowCapture",
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


def query_payload(seq: int, rec: QueryRecord) -> dict[str, JSONValue]:
    """The ``pg.query`` payload of one record (times are seconds since session start)."""
    sql = rec.sql
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
    return payload


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


class RowCapture:
    """A bounded sample of each result set, masked, as ``pg.rows`` payloads.

    Feed every server message with ``backend``; it returns a payload when a
    result set ends (CommandComplete, PortalSuspended, error). At most
    ``max_rows`` rows per result set are kept, each value cut to 1 KiB.
    """

    def __init__(self, max_rows: int, rules: MaskRules) -> None:
        self.max_rows = max_rows
        self.rules = rules
        self._columns: list[str] = []
        self._masked: list[bool] = []
        self._binary: list[bool] = []
        self._rows: list[list[JSONValue]] = []
        self._seen = 0
        self._open = False
        self._count = 0

    def backend(self, msg: object) -> dict[str, JSONValue] | None:
        """Note one server message; a ``pg.rows`` payload when a result set is complete."""
        if isinstance(msg, DataRow):
            self._seen += 1
            if self._open and len(self._rows) < self.max_rows:
                self._rows.append(self._row(msg.values))
            return None
        if isinstance(msg, RowDescription):
            self._columns = [_utf8(f.name) for f in msg.fields]
            self._masked = [self.rules.masks(c) for c in self._columns]
            self._binary = [f.format == 1 for f in msg.fields]
            self._rows, self._seen, self._open = [], 0, True
            return None
        if isinstance(msg, CommandComplete | PortalSuspended | EmptyQueryResponse | ErrorResponse):
            if not self._open:
                return None
            self._count += 1
            payload: dict[str, JSONValue] = {
                "set": self._count,
                "columns": list(self._columns),
                "masked": [c for c, m in zip(self._columns, self._masked, strict=False) if m],
                "rows": list(self._rows),
                "total": self._seen,
                "truncated": self._seen > len(self._rows),
                "tag": msg.tag if isinstance(msg, CommandComplete) else None,
            }
            # A suspended portal continues with more DataRows and no new RowDescription.
            self._open = isinstance(msg, PortalSuspended)
            self._rows, self._seen = [], 0
            return payload
        return None

    def _row(self, values: Sequence[bytes | None]) -> list[JSONValue]:
        row: list[JSONValue] = []
        for i, value in enumerate(values):
            if i < len(self._masked) and self._masked[i]:
                row.append(None if value is None else MASKED)
            elif value is None:
                row.append(None)
            elif i < len(self._binary) and self._binary[i]:
                row.append({"hex": value[: _MAX_VALUE // 2].hex()})
            else:
                text = value[:_MAX_VALUE].decode("utf-8", "replace")
                row.append(text + ("…" if len(value) > _MAX_VALUE else ""))
        return row
