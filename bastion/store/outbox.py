"""The outbox: the node's own state writes, kept on local disk while the database is away.

A node writes session rows, their end, counts and final hash, command indexes and
audit events on its own behalf (nobody waits on them but the record). When the
state database cannot be reached those writes go, in order, into a small SQLite
journal next to the recordings (``[state] outbox``), synchronously committed, and
are replayed in the same order once the database answers again. While anything
waits in the journal every new write queues behind it, so a session's end never
reaches the database before its start, and audit rows are chained (ids and
hashes assigned) at replay, so the chain stays whole.

Writes are named operations (``register``): the journal holds the name and the
JSON arguments, never a pickled call, so an entry written by one version of the
node is still readable by the next. Admin commands never use the outbox: a
person is waiting and is told the database is down.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.errors import StoreError, StoreUnavailable
from bastion.store.db import Store
from bastion.store.models import SessionRecord

log = logging.getLogger(__name__)

Operation = Callable[..., object]
"""``op(store, **kwargs)``: one write, replayable from its JSON arguments."""

_OPS: dict[str, Operation] = {}


def register(name: str, op: Operation) -> None:
    """Make ``op`` journalable as ``name`` (its keyword arguments must be JSON values)."""
    _OPS[name] = op


def _start_session(store: Store, rec: dict[str, Any]) -> None:
    store.start_session(SessionRecord(**rec))


register("start_session", _start_session)
register("end_session", lambda store, **kw: store.end_session(**kw))
register("append_audit", lambda store, **kw: store.append_audit(**kw))
register(
    "add_session_commands",
    lambda store, session_id, commands: store.add_session_commands(
        session_id, [(float(t), str(text)) for t, text in commands]
    ),
)
register(
    "update_recording_hash",
    lambda store, **kw: store.update_recording_hash(**kw),
)


def session_row(rec: SessionRecord) -> dict[str, Any]:
    """A session record as ``start_session``'s journal argument."""
    return dataclasses.asdict(rec)


class Outbox:
    """An append-only journal of pending writes in a SQLite file (created when first needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.pending = 0
        """Entries waiting for the database."""
        if path.exists():
            self._open()
            row = self._db().execute("SELECT COUNT(*) FROM outbox").fetchone()
            self.pending = int(row[0])

    def _open(self) -> None:
        if not self.path.exists():
            # Audit details and session metadata live here: private from the start.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL").close()
            conn.execute("PRAGMA synchronous=FULL").close()  # a journaled write survives a crash
            conn.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " op TEXT NOT NULL, args TEXT NOT NULL)"
            ).close()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the state outbox {self.path}: {e}") from e
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._open()
        assert self._conn is not None  # noqa: S101  opened just above
        return self._conn

    def append(self, op: str, args: dict[str, Any]) -> None:
        """Journal one write (durable when this returns)."""
        text = json.dumps(args, sort_keys=True, default=str)
        try:
            self._db().execute("INSERT INTO outbox (op, args) VALUES (?, ?)", (op, text)).close()
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the state outbox {self.path}: {e}") from e
        self.pending += 1

    def first(self) -> tuple[int, str, dict[str, Any]] | None:
        """The oldest pending write, or None."""
        if not self.pending:
            return None
        row = self._db().execute("SELECT seq, op, args FROM outbox ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            self.pending = 0
            return None
        return int(row[0]), str(row[1]), json.loads(row[2])

    def remove(self, seq: int) -> None:
        """Forget a write once the database has it."""
        self._db().execute("DELETE FROM outbox WHERE seq = ?", (seq,)).close()
        self.pending = max(0, self.pending - 1)

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class StateWriter:
    """The node's own writes: straight to the database, or into the outbox while it is away.

    Thread-safe; every method blocks (run them through ``BastionNode.call``).
    """

    def __init__(self, store: Store, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Writes waiting in the outbox."""
        return self.outbox.pending

    def write(self, op: str, **args: Any) -> bool:
        """Apply ``op`` now (True), or journal it (False) when the database is away or
        earlier writes still wait (order is kept). Other store errors are raised."""
        run = _OPS[op]
        with self._lock:
            if not self.outbox.pending:
                try:
                    run(self.store, **args)
                    return True
                except StoreUnavailable:
                    pass
            self.outbox.append(op, args)
            return False

    def replay(self) -> int:
        """Apply journaled writes in order until none is left or the database goes away.

        Returns how many were applied. A write the database refuses (its session
        was closed by crash recovery meanwhile, say) is logged and dropped, so one
        bad entry cannot hold back the rest.
        """
        done = 0
        while True:
            with self._lock:
                entry = self.outbox.first()
                if entry is None:
                    return done
                seq, op, args = entry
                try:
                    _OPS[op](self.store, **args)
                except StoreUnavailable:
                    return done
                except (StoreError, KeyError, TypeError) as e:
                    log.warning("state outbox: dropping %s #%d, not applicable: %s", op, seq, e)
                self.outbox.remove(seq)
                done += 1
