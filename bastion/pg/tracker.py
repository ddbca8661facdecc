"""Pairs client requests with server results, one record per executed query.

PostgreSQL answers strictly in order, so a FIFO of outstanding requests is
enough to know which result belongs to which statement, even when a client
pipelines many extended-protocol batches ahead of the answers. The tracker
mirrors the server's rules that matter for an audit trail:

- a simple Query gets results for each of its statements, then ReadyForQuery;
  it becomes one record (all completion tags, total rows, the first error);
- extended protocol: Parse names SQL text, Bind attaches parameters to a portal,
  each Execute becomes one record (tag, rows, PortalSuspended, or error);
- after an error in an extended-protocol message the server discards every
  message up to the next Sync, so those produce no records, and the statement
  and portal names they would have defined are rolled back;
- COPY (in a Query or an Execute) counts CopyData messages and payload bytes in
  its direction; the row count comes from the ``COPY n`` tag.

Records are released at the ReadyForQuery that ends their batch, so each carries
the transaction status after it. ``close()`` releases what is left when the
connection ends, marking requests that never got an answer ``completed=False``
(the server may still have run them). The tracker is pure: messages in, records
out, time from the clock passed in; it never raises on odd sequences and counts
server messages it cannot pair in ``unmatched``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bastion.pg.messages import (
    Bind,
    BindComplete,
    Close,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FunctionCall,
    NoData,
    Parse,
    ParseComplete,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
    TransactionStatus,
)
from bastion.pg.params import Param, decode_params

__all__ = ["QueryKind", "QueryRecord", "QueryTracker", "tag_rows"]

QueryKind = Literal["simple", "extended", "copy", "function", "error"]
"""``error``: an ErrorResponse with no request to pin it on (e.g. auth failure)."""

_ROW_COUNT_TAGS = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "FETCH", "MOVE"}
)


@dataclass(slots=True)
class QueryRecord:
    """One executed request, ready for the recording (not changed once made).

    Not ``frozen``: a frozen dataclass sets each of these 20 fields through
    ``object.__setattr__``, 3-4x the cost of a plain one, once per statement on
    the relay's hot path (issue 17).

    ``rows`` is the count from the completion tag (rows affected, copied or
    selected), else the number of DataRows; for a simple Query it is the total
    over its statements. Times come from the tracker's clock: ``started_at``
    when the request was seen, ``finished_at`` when its result ended.
    """

    kind: QueryKind
    sql: str | None
    params: tuple[Param, ...] = ()
    statement: str | None = None
    portal: str | None = None
    tag: str | None = None
    tags: tuple[str, ...] = ()
    rows: int | None = None
    returned: int = 0
    """The most rows one statement of the request sent to the client (DataRows, or
    the count of a COPY ... TO): what ``[alerts] statement_rows`` compares."""
    error_sqlstate: str | None = None
    error_message: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    tx_status: TransactionStatus | None = None
    completed: bool = True
    suspended: bool = False
    copy_direction: Literal["in", "out", "both"] | None = None
    copy_bytes: int = 0
    copy_messages: int = 0
    function_oid: int | None = None


def tag_rows(tag: str) -> int | None:
    """The row count carried by a completion tag (``INSERT 0 5`` -> 5), if any."""
    words = tag.split()
    if len(words) >= 2 and words[0] in _ROW_COUNT_TAGS and words[-1].isdigit():
        return int(words[-1])
    return None


_Done = tuple["_Op", "QueryKind | None", float, bool]
"""An answered request waiting for its ReadyForQuery: (op, kind, finished at, completed)."""

_Action = Literal["query", "parse", "bind", "describe", "execute", "close", "sync", "function"]


@dataclass(slots=True)
class _Statement:
    sql: str
    type_oids: tuple[int, ...]


@dataclass(slots=True)
class _Portal:
    statement: str
    sql: str | None
    params: tuple[Param, ...]


_Undo = Callable[[], None]


@dataclass(eq=False, slots=True)
class _Op:
    """One client request still waiting for (the end of) its answer."""

    action: _Action
    started_at: float
    sql: str | None = None
    params: tuple[Param, ...] = ()
    statement: str | None = None
    portal: str | None = None
    function_oid: int | None = None
    undo: _Undo | None = None
    tags: list[str] = field(default_factory=list)
    rows: int | None = None
    data_rows: int = 0  # DataRows of the statement now running
    returned: int = 0  # the most rows one finished statement sent to the client
    error: ErrorResponse | None = None
    suspended: bool = False
    copy_direction: Literal["in", "out", "both"] | None = None
    copy_bytes: int = 0
    copy_messages: int = 0

    def statement_done(self, tag: str | None) -> None:
        """Fold one finished statement (tag, DataRow count) into the totals."""
        rows = tag_rows(tag) if tag is not None else None
        if rows is None and self.data_rows:
            rows = self.data_rows
        if tag is not None:
            self.tags.append(tag)
        if rows is not None:
            self.rows = (self.rows or 0) + rows
        sent = self.data_rows
        if not sent and rows and tag and tag.startswith("COPY") and self.copy_direction == "out":
            sent = rows
        self.returned = max(self.returned, sent)
        self.data_rows = 0


def _unset(table: dict[str, object], name: str, previous: object) -> _Undo:
    def undo() -> None:
        if previous is _MISSING:
            table.pop(name, None)
        else:
            table[name] = previous

    return undo


_MISSING = object()
_COPY_DIRECTION: dict[type[object], Literal["in", "out", "both"]] = {
    CopyInResponse: "in",
    CopyOutResponse: "out",
    CopyBothResponse: "both",
}


class QueryTracker:
    """Turns the two message streams of one connection into QueryRecords.

    Call ``frontend(msg)`` for each client message and ``backend(msg)`` for each
    server message, in the order they crossed the proxy; ``backend`` returns the
    records completed by that message. ``max_names`` bounds the remembered
    statement and portal names (oldest forgotten first).
    """

    def __init__(self, clock: Callable[[], float], *, max_names: int = 10_000) -> None:
        self._clock = clock
        self._max_names = max_names
        self._queue: deque[_Op] = deque()
        self._statements: dict[str, object] = {}  # name -> _Statement
        self._portals: dict[str, object] = {}  # name -> _Portal
        self._skipping = False
        self._copy: _Op | None = None
        self._finished: list[_Done] = []  # records are built at ReadyForQuery
        self.tx_status: TransactionStatus | None = None
        """Transaction status from the latest ReadyForQuery."""
        self.unmatched = 0
        """Server messages that fitted no outstanding request (should stay 0)."""

    @property
    def in_flight(self) -> int:
        """Client requests still waiting for an answer."""
        return len(self._queue)

    # ----------------------------------------------------------------- client side

    def frontend(self, msg: object) -> None:
        """Note a message the client sent (anything not query-related is ignored)."""
        if isinstance(msg, CopyData | CopyFail):
            if isinstance(msg, CopyData):
                self.copy_data_in(len(msg.data))
            return
        if isinstance(msg, Sync):
            self.sync()
            return
        if self._skipping:  # the server discards everything up to Sync
            return
        op = self._request(msg)
        if op is not None:
            self._queue.append(op)

    # The relay's scanner (``relay_scan``) calls these directly with decoded fields
    # instead of building message objects; ``frontend`` routes messages to the same code.

    def query(self, sql: str) -> None:
        """A simple Query."""
        if not self._skipping:
            self._queue.append(_Op("query", self._clock(), sql=sql))

    def parse(self, name: str, sql: str, param_oids: tuple[int, ...]) -> None:
        """A Parse: names ``sql`` as statement ``name``."""
        if not self._skipping:
            undo = self._define(self._statements, name, _Statement(sql, param_oids))
            self._queue.append(_Op("parse", self._clock(), sql=sql, statement=name, undo=undo))

    def bind(
        self,
        portal: str,
        statement: str,
        formats: Sequence[int],
        values: Sequence[bytes | None],
    ) -> None:
        """A Bind: ``values`` (in ``formats``) for ``statement``, as portal ``portal``."""
        if self._skipping:
            return
        stmt = self._statements.get(statement)
        sql, oids = (stmt.sql, stmt.type_oids) if isinstance(stmt, _Statement) else (None, ())
        params = decode_params(values, formats, oids)
        undo = self._define(self._portals, portal, _Portal(statement, sql, params))
        op = _Op("bind", self._clock(), sql, params, statement=statement, portal=portal, undo=undo)
        self._queue.append(op)

    def execute(self, portal_name: str) -> None:
        """An Execute of a bound portal."""
        if self._skipping:
            return
        now = self._clock()
        portal = self._portals.get(portal_name)
        if isinstance(portal, _Portal):
            op = _Op("execute", now, portal.sql, portal.params, portal.statement, portal_name)
        else:
            op = _Op("execute", now, portal=portal_name)
        self._queue.append(op)

    def describe(self, kind: str, name: str) -> None:
        """A Describe of a statement (``S``) or portal (``P``)."""
        if not self._skipping:
            found = (self._statements if kind == "S" else self._portals).get(name)
            text = found.sql if isinstance(found, _Portal | _Statement) else None
            self._queue.append(_Op("describe", self._clock(), sql=text))

    def sync(self) -> None:
        """A Sync: ends an extended-protocol batch and any skipping after an error."""
        self._skipping = False
        self._queue.append(_Op("sync", self._clock()))

    def copy_data_in(self, size: int) -> None:
        """A client CopyData of ``size`` bytes."""
        op = self._copy
        if op is not None and op.copy_direction != "out":
            op.copy_bytes += size
            op.copy_messages += 1

    def copy_data_out(self, size: int, count: int) -> None:
        """``count`` server CopyData of ``size`` bytes in all (the scanner's fast path:
        no message object, one call per run of rows)."""
        op = self._copy
        if op is not None and op.copy_direction != "in":
            op.copy_bytes += size
            op.copy_messages += count

    def _request(self, msg: object) -> _Op | None:
        now = self._clock()
        if isinstance(msg, Query):
            return _Op("query", now, sql=msg.query)
        if isinstance(msg, Parse):
            self.parse(msg.name, msg.query, tuple(msg.param_oids))
            return None
        if isinstance(msg, Bind):
            self.bind(msg.portal, msg.statement, msg.param_formats, msg.params)
            return None
        if isinstance(msg, Execute):
            self.execute(msg.portal)
            return None
        if isinstance(msg, Describe):
            self.describe(msg.kind, msg.name)
            return None
        if isinstance(msg, Close):
            table = self._statements if msg.kind == "S" else self._portals
            found = table.get(msg.name)
            text = found.sql if isinstance(found, _Portal | _Statement) else None
            closed = None
            if msg.name in table:
                closed = _unset(table, msg.name, table.pop(msg.name))
            return _Op("close", now, sql=text, undo=closed)
        if isinstance(msg, FunctionCall):
            args = decode_params(msg.args, msg.arg_formats)
            return _Op("function", now, params=args, function_oid=msg.function_oid)
        return None

    def _define(self, table: dict[str, object], name: str, value: object) -> _Undo:
        previous = table.pop(name, _MISSING)
        table[name] = value
        while len(table) > self._max_names:
            del table[next(iter(table))]
        return _unset(table, name, previous)

    # ----------------------------------------------------------------- server side

    def backend(self, msg: object) -> list[QueryRecord]:  # noqa: C901  one branch per message type
        """Note a server message; return the records it completes (usually none)."""
        if isinstance(msg, ReadyForQuery):
            return self.ready(msg.status)
        if isinstance(msg, ErrorResponse):
            return self._error(msg, self._queue[0] if self._queue else None)
        if isinstance(msg, DataRow):
            self.data_row()
        elif isinstance(msg, CommandComplete):
            self.statement_end(msg.tag, False)
        elif isinstance(msg, EmptyQueryResponse | PortalSuspended):
            self.statement_end(None, isinstance(msg, PortalSuspended))
        elif isinstance(msg, RowDescription | NoData):
            self.row_description()
        elif isinstance(msg, ParseComplete):
            self.completed("parse")
        elif isinstance(msg, BindComplete):
            self.completed("bind")
        elif isinstance(msg, CloseComplete):
            self.completed("close")
        elif isinstance(msg, CopyInResponse | CopyOutResponse | CopyBothResponse):
            head = self._queue[0] if self._queue else None
            if head is not None and head.action in ("query", "execute"):
                head.copy_direction = _COPY_DIRECTION[type(msg)]
                self._copy = head
            else:
                self.unmatched += 1
        elif isinstance(msg, CopyData):
            op = self._copy
            if op is not None and op.copy_direction != "in":
                op.copy_bytes += len(msg.data)
                op.copy_messages += 1
        return []

    def result_source(self) -> tuple[str | None, int]:
        """The SQL text the next RowDescription or COPY answers and the index of the
        statement in it (a simple Query may hold several); (None, 0) if not known."""
        head = self._queue[0] if self._queue else None
        if head is None or head.action not in ("query", "execute", "describe"):
            return None, 0
        return head.sql, len(head.tags) if head.action == "query" else 0

    def data_row(self) -> None:
        """A DataRow: counted for the statement running."""
        self.data_rows(1)

    def data_rows(self, count: int) -> None:
        """``count`` DataRows in a row: counted for the statement running."""
        queue = self._queue
        if queue and queue[0].action in ("query", "execute"):
            queue[0].data_rows += count
        else:
            self.unmatched += count

    def row_description(self) -> None:
        """A RowDescription or NoData: answers a Describe, or starts a result set."""
        head = self._queue[0] if self._queue else None
        if head is not None and head.action == "describe":
            self._queue.popleft()
        elif head is not None and head.action == "query":
            head.data_rows = 0
        else:
            self.unmatched += 1

    def completed(self, action: Literal["parse", "bind", "close"]) -> None:
        """ParseComplete, BindComplete or CloseComplete for the request at the head."""
        queue = self._queue
        if queue and queue[0].action == action:
            queue.popleft()
        else:
            self.unmatched += 1

    def statement_end(self, tag: str | None, suspended: bool) -> None:
        """CommandComplete (``tag``), EmptyQueryResponse or PortalSuspended."""
        head = self._queue[0] if self._queue else None
        if head is None or head.action not in ("query", "execute"):
            self.unmatched += 1
            return
        if self._copy is head:
            self._copy = None
        head.suspended = suspended
        head.statement_done(tag)
        if head.action == "execute":
            self._queue.popleft()
            self._finished.append((head, None, self._clock(), True))

    def _error(self, msg: ErrorResponse, head: _Op | None) -> list[QueryRecord]:
        now = self._clock()
        if self._copy is head:
            self._copy = None
        if head is None:  # nothing asked: authentication failure, admin shutdown...
            return [self._record(_Op("query", now, error=msg), "error", now, self.tx_status)]
        if head.action in ("query", "function"):
            if head.error is None:  # a simple Query stops at its first error
                head.error = msg
                head.statement_done(None)
            return []
        if head.action == "sync":  # e.g. a deferred constraint failing at implicit COMMIT
            self._finished.append((_Op("sync", now, error=msg), "extended", now, True))
            return []
        self._queue.popleft()
        head.error = msg
        if head.action == "execute":
            head.statement_done(None)
        self._finished.append((head, None, now, True))
        # PostgreSQL now skips every message up to Sync; roll back their effects,
        # latest first, then the failed message's own.
        skipped: list[_Op] = []
        while self._queue and self._queue[0].action != "sync":
            skipped.append(self._queue.popleft())
        for op in [*reversed(skipped), head]:
            if op.undo is not None:
                op.undo()
        self._skipping = not self._queue
        return []

    def ready(self, status: TransactionStatus) -> list[QueryRecord]:
        """ReadyForQuery: the end of a batch; returns the records it completes."""
        self.tx_status = status
        # Normally the head is the Sync/Query/FunctionCall this answers. If not, we
        # lost step: requests ahead of it got no answer; resynchronise on it.
        while self._queue:
            op = self._queue.popleft()
            if op.action in ("sync", "query", "function"):
                if op.action != "sync":
                    self._finished.append((op, None, self._clock(), True))
                break
            self.unmatched += 1
            if op.action == "execute":
                self._finished.append((op, None, self._clock(), False))
        self._copy = None
        records = [self._record(*done[:3], tx=status, completed=done[3]) for done in self._finished]
        self._finished.clear()
        if status is TransactionStatus.IDLE and not self._queue:
            self._portals.clear()  # portals never outlive their transaction
        return records

    def close(self) -> list[QueryRecord]:
        """The connection ended: release every record still held.

        Queries, Executes and function calls that never got a complete answer
        come out with ``completed=False``; their transaction status is unknown.
        """
        records = [self._record(*done[:3], completed=done[3]) for done in self._finished]
        self._finished = []
        now = self._clock()
        for op in self._queue:
            if op.action in ("query", "execute", "function"):
                records.append(self._record(op, None, now, completed=False))
        self._queue.clear()
        self._copy = None
        self._skipping = False
        return records

    def _record(
        self,
        op: _Op,
        kind: QueryKind | None,
        finished_at: float,
        tx: TransactionStatus | None = None,
        completed: bool = True,
    ) -> QueryRecord:
        if kind is None:
            if op.copy_direction is not None:
                kind = "copy"
            elif op.action == "query":
                kind = "simple"
            elif op.action == "function":
                kind = "function"
            else:
                kind = "extended"
        error = op.error
        return QueryRecord(
            kind=kind,
            sql=op.sql,
            params=op.params,
            statement=op.statement,
            portal=op.portal,
            tag=op.tags[-1] if op.tags else None,
            tags=tuple(op.tags),
            rows=op.rows,
            returned=op.returned,
            error_sqlstate=error.sqlstate if error is not None else None,
            error_message=error.message if error is not None else None,
            started_at=op.started_at,
            finished_at=finished_at,
            tx_status=tx,
            completed=completed,
            suspended=op.suspended,
            copy_direction=op.copy_direction,
            copy_bytes=op.copy_bytes,
            copy_messages=op.copy_messages,
            function_oid=op.function_oid,
        )
