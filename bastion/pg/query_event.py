"""The events a database session leaves in its recording: names, and a typed view of a query.

A recording is a contract: the node writes ``pg.query`` (one per statement) and
``pg.rows`` (an optional masked sample of a result set) as structured events, and
the control API, the console and the search index read them back, maybe from a
file written by an older node. The names live here once. ``QueryEvent`` is the
typed read of a ``pg.query`` payload: it checks the types of the fields readers
use and keeps the payload exactly as recorded, so ``to_payload`` hands on the same
JSON (unknown and future fields included). The writer is
``bastion.pg.query_log.QueryLog``.

A named prepared statement's text is recorded once and referred to afterwards:
a ``pg.query`` event of a statement the client prepared (``statement`` not
empty) may carry ``"sql": null`` and ``"sql_ref": N``, the ``seq`` of an earlier
event of the same session that carries the text (and ``sql_hex``, if any). The
writer guarantees that event is in the **same chunk** of the recording and at
most ``MAX_REF_GAP`` queries back, so any reader that starts at a chunk boundary
(a seek, the backward read of a late watcher's snapshot, a file with a damaged
chunk) can resolve every reference it meets. ``QueryResolver`` does it: feed it
the events in order and it hands back each reference with its ``sql`` filled in
and ``sql_ref`` gone, exactly the payload an older node would have written.
Every reader of ``pg.query`` goes through it.

This module imports only ``recorder``: the console (``replay``) uses it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from recorder.events import Event, JSONValue, Structured

__all__ = [
    "MAX_REF_GAP",
    "QUERY_EVENT",
    "ROWS_EVENT",
    "QueryEvent",
    "QueryResolver",
    "resolve_queries",
    "searchable_queries",
]

QUERY_EVENT: Final = "pg.query"
"""A statement finished (or was cut short): SQL, parameters, outcome, timing."""
ROWS_EVENT: Final = "pg.rows"
"""A bounded, masked sample of one result set (``[pg] capture_rows``)."""

MAX_REF_GAP: Final = 10_000
"""A ``sql_ref`` points fewer than this many queries back (``seq`` minus ``sql_ref``)."""

_MAX_SEARCHABLE = 4096  # characters of a statement kept for the search index
_MAX_STATEMENTS = 10_000  # distinct statements indexed per session, as the live path does


def _str(value: JSONValue) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: JSONValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: JSONValue) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class QueryEvent:
    """One ``pg.query`` payload, typed; a field of the wrong type reads as None."""

    start: float
    """Seconds since the session started when the statement began."""
    seq: int | None
    kind: str | None
    """``simple``, ``extended``, ``function``... (the tracker's kind)."""
    sql: str | None
    tag: str | None
    """The command tag (``SELECT 3``) of the last result."""
    rows: int | None
    duration_ms: float | None
    error_sqlstate: str | None
    error_message: str | None
    payload: Mapping[str, JSONValue]
    """The payload as recorded (read-only by convention; ``to_payload`` copies it)."""

    @classmethod
    def from_payload(cls, payload: JSONValue, time: float = 0.0) -> QueryEvent | None:
        """The view of ``payload``; None if it is not a JSON object.

        ``time`` (the event's time) stands in for a missing or malformed ``start``.
        """
        if not isinstance(payload, dict):
            return None
        error = payload.get("error")
        error = error if isinstance(error, dict) else {}
        start = _float(payload.get("start"))
        return cls(
            start=time if start is None else start,
            seq=_int(payload.get("seq")),
            kind=_str(payload.get("kind")),
            sql=_str(payload.get("sql")),
            tag=_str(payload.get("tag")),
            rows=_int(payload.get("rows")),
            duration_ms=_float(payload.get("duration_ms")),
            error_sqlstate=_str(error.get("sqlstate")),
            error_message=_str(error.get("message")),
            payload=payload,
        )

    @classmethod
    def from_event(cls, event: Event) -> QueryEvent | None:
        """The view of a recorded ``pg.query`` event; None for any other event."""
        if isinstance(event, Structured) and event.name == QUERY_EVENT:
            return cls.from_payload(event.payload, event.time)
        return None

    def to_payload(self) -> dict[str, JSONValue]:
        """The payload as recorded, with ``start`` filled in if it was missing."""
        out = dict(self.payload)
        if not isinstance(out.get("start"), int | float) or isinstance(out.get("start"), bool):
            out["start"] = self.start
        return out


class QueryResolver:
    """Fills in the text of ``pg.query`` events that refer to an earlier one (``sql_ref``).

    Give it every event of a recording in order, from its start or from the start of
    any chunk (see the module docstring). It keeps the texts of named statements
    for the last ``MAX_REF_GAP`` queries; a reference it cannot resolve (a reader
    that started inside a chunk) is handed on as recorded, ``sql`` null.
    """

    __slots__ = ("_latest", "_texts")

    def __init__(self) -> None:
        self._texts: dict[int, tuple[str, JSONValue]] = {}
        self._latest = 0

    def payload(self, payload: JSONValue) -> JSONValue:
        """``payload`` (a ``pg.query`` payload) resolved: the same object unless it
        was a reference this resolver knows the text of."""
        if not isinstance(payload, dict):
            return payload
        ref = payload.get("sql_ref")
        if ref is None:
            sql, seq = payload.get("sql"), payload.get("seq")
            if type(sql) is str and type(seq) is int and payload.get("statement"):
                self._keep(seq, sql, payload.get("sql_hex"))
            return payload
        found = self._texts.get(ref) if type(ref) is int else None
        if found is None:
            return payload
        out = dict(payload)
        del out["sql_ref"]
        out["sql"] = found[0]
        if found[1] is not None:
            out["sql_hex"] = found[1]
        return out

    def resolve(self, event: Event) -> Event:
        """``event`` with its text filled in if it is a ``pg.query`` reference."""
        if isinstance(event, Structured) and event.name == QUERY_EVENT:
            payload = self.payload(event.payload)
            if payload is not event.payload:
                return Structured(event.time, event.name, payload)
        return event

    def _keep(self, seq: int, sql: str, sql_hex: JSONValue) -> None:
        texts = self._texts
        texts[seq] = (sql, sql_hex)
        if seq > self._latest:
            self._latest = seq
        if len(texts) > 2 * MAX_REF_GAP:  # amortised: at most MAX_REF_GAP stay
            oldest = self._latest - MAX_REF_GAP
            self._texts = {s: t for s, t in texts.items() if s > oldest}


def resolve_queries(events: Iterable[Event]) -> Iterator[Event]:
    """``events`` with every ``pg.query`` reference resolved (``QueryResolver``)."""
    resolver = QueryResolver()
    for event in events:
        yield resolver.resolve(event)


def searchable_queries(events: Iterable[Event], started_at: float) -> list[tuple[float, str]]:
    """``(absolute time, SQL)`` of each distinct recorded statement (its first run), for
    ``bastion sessions search``; at most 10,000 statements of 4 KiB each."""
    found: dict[str, float] = {}
    for event in resolve_queries(events):
        query = QueryEvent.from_event(event)
        if query is None or query.sql is None or not query.sql.strip():
            continue
        sql = query.sql.strip()[:_MAX_SEARCHABLE]
        if sql not in found:
            found[sql] = started_at + query.start
            if len(found) >= _MAX_STATEMENTS:
                break
    return [(at, sql) for sql, at in found.items()]
