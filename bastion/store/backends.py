"""The two database drivers behind one small transaction interface.

Store code writes each query once, with ``?`` placeholders, and runs it inside
``backend.transaction()``; the PostgreSQL backend rewrites the placeholders for
psycopg. Both backends hand out rows as plain dicts and turn driver errors into
``StoreError`` subclasses, so nothing above this module imports a driver. The
PostgreSQL backend lives in ``pg_backend`` and is imported only for a
``postgresql://`` URL: a command on a SQLite store never loads psycopg.

Cross-process safety: SQLite write transactions start with ``BEGIN IMMEDIATE``
(one writer at a time, others wait ``busy_timeout``); on PostgreSQL a
transaction that must be serialised across nodes calls ``tx.lock(key)``, a
transaction-scoped advisory lock. Within a process one lock per backend makes
the single connection safe to share between threads.

An unreachable database raises ``StoreUnavailable``. After one, calls fail at
once for ``PROBE_INTERVAL`` seconds instead of each waiting out a connect
timeout (a breaker): worker threads never pile up behind a dead server, and one
call per interval probes whether it is back.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from bastion.errors import AlreadyExists, StoreError, StoreUnavailable

Row = dict[str, Any]
Params = Sequence[Any]

SQLITE_BUSY_TIMEOUT = 15.0  # seconds a writer waits for another process's write
PG_CONNECT_TIMEOUT = 5  # seconds
PROBE_INTERVAL = 1.0
"""Seconds calls fail at once after the database was found unreachable."""

log = logging.getLogger(__name__)


class Tx(ABC):
    """One open transaction: run statements, read rows."""

    @abstractmethod
    def run(self, sql: str, params: Params = ()) -> int:
        """Execute a statement; return the number of rows it changed."""

    @abstractmethod
    def all(self, sql: str, params: Params = ()) -> list[Row]:
        """Execute a query and return every row."""

    def one(self, sql: str, params: Params = ()) -> Row | None:
        """Execute a query expected to return at most one row."""
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def insert(self, sql: str, params: Params = ()) -> int:
        """Execute an ``INSERT ... RETURNING id`` and return the id."""
        row = self.one(sql, params)
        if row is None:  # pragma: no cover - RETURNING always yields a row
            raise StoreError("insert returned no id")
        return int(row["id"])

    @abstractmethod
    def lock(self, key: int) -> None:
        """Serialise this transaction against every other one taking ``key``, on any node."""

    def notify(self, channel: str, payload: str) -> None:
        """Signal listening nodes when (and only if) this transaction commits.

        A no-op on SQLite, which has no such signal: its nodes rely on the poll.
        """
        del channel, payload


class Backend(ABC):
    """A connection to one state database."""

    name: str
    #: Type names substituted into migration templates.
    types: dict[str, str]

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._closed = False
        self._down: str | None = None
        self._retry_at = 0.0  # time.monotonic()
        self.down_since: float | None = None
        """POSIX time the database was first found unreachable (None while it answers)."""

    @property
    def unavailable(self) -> str | None:
        """Why the database is unreachable (the last error), or None while it answers."""
        return self._down

    def _fail_fast(self) -> None:
        """Raise at once while the breaker is open; let one call through per interval."""
        if self._down is None:
            return
        now = time.monotonic()
        if now < self._retry_at:
            raise StoreUnavailable(self._down)
        # This call probes; the others keep failing fast while it tries to connect.
        self._retry_at = now + PG_CONNECT_TIMEOUT + PROBE_INTERVAL

    def _went_down(self, reason: str) -> None:
        if self._down is None:
            self.down_since = time.time()
            log.warning("state database unreachable: %s", reason)
        self._down = reason
        self._retry_at = time.monotonic() + PROBE_INTERVAL

    def _came_back(self) -> None:
        if self._down is not None:
            since = self.down_since or time.time()
            log.warning("state database reachable again after %.0fs", time.time() - since)
            self._down = None
            self.down_since = None

    @abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager[Tx]: ...

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Tx]:
        """Open a transaction (committed on success, rolled back on error).

        ``write`` marks transactions that change data; SQLite takes its write
        lock up front for them so read-modify-write sequences are atomic.
        Raises AlreadyExists on a unique-constraint race, StoreUnavailable when
        the database cannot be reached and StoreError when it refuses the statement.
        """
        self._fail_fast()
        lost = False
        with self._mutex:
            if self._closed:
                raise StoreError("the state store is closed")
            try:
                with self._transaction(write) as tx:
                    yield tx
            except StoreUnavailable as e:
                lost = True
                self._went_down(str(e))
                raise
            except StoreError:
                raise
            except Exception as e:
                translated = self._translate(e)
                if translated is e:
                    raise
                if isinstance(translated, StoreUnavailable):
                    lost = True
                    self._went_down(str(translated))
                raise translated from e
            finally:
                if not lost:  # it answered (even if it refused the statement)
                    self._came_back()

    @abstractmethod
    def _translate(self, error: Exception) -> Exception:
        """Map a driver error to a StoreError (or return it unchanged)."""

    @abstractmethod
    def table_exists(self, table: str) -> bool:
        """True if the table exists (used before the first migration)."""

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Idempotent."""
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._close()

    @abstractmethod
    def _close(self) -> None: ...


# --------------------------------------------------------------------------- SQLite


def _dict_factory(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def run(self, sql: str, params: Params = ()) -> int:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return cur.rowcount
        finally:
            cur.close()

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        cur = self._conn.execute(sql, tuple(params))
        try:
            return list(cur.fetchall())
        finally:
            cur.close()

    def lock(self, key: int) -> None:
        # Write transactions already hold SQLite's database-wide write lock.
        return None


class SqliteBackend(Backend):
    """A SQLite file in WAL mode, shared by every node process on one host."""

    name = "sqlite"
    types = {
        "ID": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BIGINT": "INTEGER",
        "FLOAT": "REAL",  # SQLite REAL is an 8-byte double
        "BLOB": "BLOB",
        "BOOL": "INTEGER",
    }

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        if path != ":memory:" and not os.path.exists(path):
            if not Path(path).parent.is_dir():
                raise StoreError(f"cannot create state store {path}: its directory does not exist")
            # Sealed secrets live here: create the file private before SQLite does.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(
                path,
                timeout=SQLITE_BUSY_TIMEOUT,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._mutex
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open state store {path}: {e}") from e
        try:
            conn.row_factory = _dict_factory
            conn.execute("PRAGMA journal_mode=WAL").close()
            conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}").close()
            conn.execute("PRAGMA foreign_keys=ON").close()
            conn.execute("PRAGMA synchronous=NORMAL").close()
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open state store {path}: {e}") from e
        self._conn = conn

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Tx]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN").close()
        try:
            yield _SqliteTx(conn)
        except BaseException:
            if conn.in_transaction:  # some errors roll back by themselves
                conn.execute("ROLLBACK").close()
            raise
        try:
            conn.execute("COMMIT").close()
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK").close()
            raise

    def _translate(self, error: Exception) -> Exception:
        if isinstance(error, sqlite3.IntegrityError) and error.sqlite_errorname in (
            "SQLITE_CONSTRAINT_UNIQUE",
            "SQLITE_CONSTRAINT_PRIMARYKEY",
        ):
            return AlreadyExists(f"already exists: {error}")
        if isinstance(error, sqlite3.OperationalError):
            return StoreError(f"state store {self.path} is unavailable: {error}")
        if isinstance(error, sqlite3.Error):
            return StoreError(f"state store {self.path} refused the change: {error}")
        return error

    def table_exists(self, table: str) -> bool:
        with self.transaction() as tx:
            row = tx.one(
                "SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?", [table]
            )
        return row is not None

    def _close(self) -> None:
        self._conn.close()


def connect(url: str) -> Backend:
    """Open the backend a state URL names.

    ``postgresql://`` / ``postgres://`` URLs go to PostgreSQL; ``sqlite:///path``
    (three or four slashes, absolute) and plain filesystem paths to SQLite.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from bastion.store.pg_backend import PostgresBackend  # psycopg only when needed

        return PostgresBackend(url)
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if rest.startswith("//"):
            rest = rest[2:]
        if rest.lstrip("/") == ":memory:":
            return SqliteBackend(":memory:")
        path = "/" + rest.lstrip("/") if rest.startswith("/") else rest
        if not path:
            raise StoreError(f"state URL {url!r} names no file; use sqlite:///abs/path/state.db")
        return SqliteBackend(path)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"unsupported state URL scheme {scheme!r}; use sqlite:///path or postgresql://..."
        )
    return SqliteBackend(url)
