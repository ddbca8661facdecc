"""The search index of sessions: entries, per-session markers, substring search.

A mixin of ``Store``. Entries are derived data (the recording stays the evidence):
``replace_session_index`` swaps a session's rows and its marker in one transaction,
so an index interrupted half-way is either the old state or the new one, never a mix,
and running it twice gives the same rows. Search is a substring match on both
backends: SQLite's FTS5 trigram index (``MATCH`` on a quoted phrase), PostgreSQL's
``pg_trgm`` GIN index (``ILIKE``). Texts shorter than three characters cannot use
a trigram index and scan the entries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bastion.errors import UsageError
from bastion.store import rows
from bastion.store.backends import Backend
from bastion.store.history import where_clause
from bastion.store.models import IndexHit, SessionRecord

KINDS = ("commands", "output", "queries", "results", "files")
"""What the index holds, in the order ``--in`` lists them."""

_INSERT_BATCH = 500
_FILE_AUDIT_LAG = 60.0  # file rows are spawned as the channel closes: a little after the end


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# SQL here is built only from fixed text and "?" marks; every value is a parameter.
class SearchIndex:
    """Index rows of a ``Store``."""

    _db: Backend

    def replace_session_index(
        self,
        session_id: str,
        entries: Sequence[tuple[str, float, str]],
        *,
        source_bytes: int,
        now: float,
    ) -> None:
        """Make ``entries`` (kind, offset, text) the session's index and mark it indexed."""
        with self._db.transaction(write=True) as tx:
            tx.run("DELETE FROM search_entries WHERE session_id = ?", [session_id])
            tx.run("DELETE FROM search_indexed WHERE session_id = ?", [session_id])
            for i in range(0, len(entries), _INSERT_BATCH):
                chunk = entries[i : i + _INSERT_BATCH]
                marks = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                params: list[Any] = []
                for kind, offset, text in chunk:
                    params += [session_id, kind, float(offset), text]
                tx.run(
                    "INSERT INTO search_entries (session_id, kind, at_offset, text)"  # noqa: S608  fixed SQL, ? values
                    f" VALUES {marks}",
                    params,
                )
            tx.run(
                "INSERT INTO search_indexed (session_id, indexed_at, entries, source_bytes)"
                " VALUES (?, ?, ?, ?)",
                [session_id, float(now), len(entries), int(source_bytes)],
            )

    def is_indexed(self, session_id: str) -> bool:
        """True once the session's index rows are complete."""
        with self._db.transaction() as tx:
            row = tx.one("SELECT 1 AS x FROM search_indexed WHERE session_id = ?", [session_id])
        return row is not None

    def sessions_to_index(
        self, *, since: float | None = None, again: bool = False, limit: int = 1000
    ) -> list[str]:
        """Ended sessions (oldest first) without a marker (``again``: with or without)."""
        where = ["s.ended_at IS NOT NULL"]
        params: list[Any] = []
        if since is not None:
            where.append("s.started_at >= ?")
            params.append(float(since))
        if not again:
            where.append("i.session_id IS NULL")
        sql = (
            "SELECT s.id FROM sessions s LEFT JOIN search_indexed i ON i.session_id = s.id"  # noqa: S608  fixed SQL, ? values
            + where_clause(where)
            + " ORDER BY s.started_at, s.id LIMIT ?"
        )
        with self._db.transaction() as tx:
            return [str(r["id"]) for r in tx.all(sql, [*params, int(limit)])]

    def session_index(self, session_id: str) -> list[tuple[str, float, str]]:
        """A session's entries (kind, offset, text) in a stable order (tests, checks)."""
        with self._db.transaction() as tx:
            found = tx.all(
                "SELECT kind, at_offset, text FROM search_entries WHERE session_id = ?"
                " ORDER BY kind, at_offset, text",
                [session_id],
            )
        return [(str(r["kind"]), float(r["at_offset"]), str(r["text"])) for r in found]

    def session_sources(
        self, session_id: str
    ) -> tuple[SessionRecord, list[tuple[float, str]], list[tuple[float, str]]] | None:
        """What the store knows of a session for its index: the row, its command lines
        (time, text) and the paths of its audited file operations (time, path)."""
        with self._db.transaction() as tx:
            row = tx.one(f"{rows.SESSION_SELECT} WHERE s.id = ?", [session_id])
            if row is None:
                return None
            session = rows.session(row)
            commands = [
                (float(r["at"]), str(r["text"]))
                for r in tx.all(
                    "SELECT at, text FROM session_commands WHERE session_id = ? ORDER BY seq",
                    [session_id],
                )
            ]
            end = session.ended_at if session.ended_at is not None else session.started_at
            audit = tx.all(
                f"SELECT {rows.AUDIT_COLUMNS} FROM audit WHERE at >= ? AND at <= ?"  # noqa: S608  fixed SQL, ? values
                " AND action LIKE 'file.%' ORDER BY id",
                [session.started_at - 60.0, end + _FILE_AUDIT_LAG],
            )
        files: list[tuple[float, str]] = []
        for r in audit:
            event = rows.audit_event(r)
            details = event.details
            if details.get("session") != session_id:
                continue
            for key in ("path", "detail"):
                value = details.get(key)
                if isinstance(value, str) and value:
                    files.append((event.at, value))
        return session, commands, files

    def index_totals(self) -> tuple[int, int, int]:
        """(sessions indexed, entries, bytes of recorded source they cover)."""
        with self._db.transaction() as tx:
            row = tx.one(
                "SELECT COUNT(*) AS n, COALESCE(SUM(entries), 0) AS e,"
                " COALESCE(SUM(source_bytes), 0) AS b FROM search_indexed"
            )
        assert row is not None  # noqa: S101  an aggregate always has a row
        return int(row["n"]), int(row["e"]), int(row["b"])

    def search_index(
        self,
        text: str,
        *,
        kinds: Sequence[str] = KINDS,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        regex: bool = False,
        limit: int = 100,
    ) -> list[IndexHit]:
        """Entries containing ``text`` (case-insensitive; ``regex``: matching the Python
        pattern ``text``), newest session first, then by offset."""
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise UsageError(
                f"--in takes {','.join(KINDS)} (comma-separated), not {','.join(sorted(unknown))}"
            )
        pattern: re.Pattern[str] | None = None
        needle: str | None = text
        if regex:
            try:
                pattern = re.compile(text)
            except re.error as e:
                raise UsageError(f"--regex: {text!r} is not a valid pattern ({e})") from e
            literal = _longest_literal(text)  # narrow with the trigram index, check in Python
            needle = literal if len(literal) >= 3 else None
        sql, params = self._search_sql(needle, kinds, user, target, since)
        hits: list[IndexHit] = []
        batch = int(limit) if pattern is None else 1000
        offset = 0
        while len(hits) < limit:
            with self._db.transaction() as tx:
                found = tx.all(sql + " LIMIT ? OFFSET ?", [*params, batch, offset])
            for r in found:
                if pattern is not None and pattern.search(str(r["text"])) is None:
                    continue
                hits.append(
                    IndexHit(
                        str(r["session_id"]), str(r["kind"]), float(r["at_offset"]),
                        float(r["started_at"]) + float(r["at_offset"]), str(r["text"]),
                        str(r["user_name"]), str(r["target_name"]),
                    )
                )  # fmt: skip
                if len(hits) >= limit:
                    break
            if len(found) < batch:
                break
            offset += batch
        return hits

    def _search_sql(
        self,
        needle: str | None,
        kinds: Sequence[str],
        user: str | None,
        target: str | None,
        since: float | None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        source = "search_entries e"
        if needle is not None:
            where_sql, value = self._contains(needle)
            where.append(where_sql)
            params.append(value)
            source = self._source(needle)
        where.append("e.kind IN (" + ", ".join("?" * len(kinds)) + ")")
        params += list(kinds)
        for column, name in (("u.name", user), ("t.name", target)):
            if name is not None:
                where.append(f"{column} = ?")
                params.append(name)
        if since is not None:
            where.append("s.started_at + e.at_offset >= ?")
            params.append(float(since))
        sql = (
            "SELECT e.session_id, e.kind, e.at_offset, e.text, s.started_at,"  # noqa: S608  fixed SQL, ? values
            " u.name AS user_name, t.name AS target_name FROM "
            + source
            + " JOIN sessions s ON s.id = e.session_id"
            " JOIN users u ON u.id = s.user_id JOIN targets t ON t.id = s.target_id"
            + where_clause(where)
            + " ORDER BY s.started_at DESC, e.session_id, e.at_offset, e.id"
        )
        return sql, params

    def _contains(self, text: str) -> tuple[str, str]:
        """The condition and value for "the entry contains ``text``"."""
        if self._db.name == "sqlite":
            if len(text) >= 3:
                return "search_fts MATCH ?", '"' + text.replace('"', '""') + '"'
            return "e.text LIKE ? ESCAPE '\\'", _like(text)
        return "e.text ILIKE ?", _like(text)

    def _source(self, text: str) -> str:
        if self._db.name == "sqlite" and len(text) >= 3:
            return "search_fts JOIN search_entries e ON e.id = search_fts.rowid"
        return "search_entries e"


_META = set(".^$*+?{}[]\\|()")


def _longest_literal(pattern: str) -> str:
    """The longest run of plain characters in a regex outside any group or class (a
    substring every match contains, if the pattern has no top-level alternation)."""
    if "|" in pattern or "(?i" in pattern:
        return ""
    best = run = ""
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            best, run = max(best, run, key=len), ""
            i += 2
            continue
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if depth == 0 and c not in _META:
            run += c
        else:
            best, run = max(best, run, key=len), ""
        # a quantifier after a character makes that character optional
        if i + 1 < len(pattern) and pattern[i + 1] in "*?{" and run:
            run = run[:-1]
            best, run = max(best, run, key=len), ""
        i += 1
    return max(best, run, key=len)
