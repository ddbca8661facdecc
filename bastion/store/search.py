"""The search index of sessions: chunks of lines, per-session markers, substring search.

A mixin of ``Store``. A session's index is a few rows, one chunk per kind (and per
~64 KiB of text or ``MAX_GRAMS`` distinct trigrams): a trigram index over its
lines and, for the small kinds (commands, statements, result rows, file names),
the lines themselves with their first offsets, stored compressed. Why chunks and
not a row per line: the trigram postings of a chunk are shared by all its lines,
which makes the index ~17x smaller on the bench's fleet (bench/README.md,
"search.py"). The index narrows to candidate chunks; the lines are then checked
in Python, which makes the answer exact (and the regex search possible).

Terminal output is most of the text and is already in the recording, compressed:
its chunks keep only their trigrams (and a digest of the lines), and a search
reads a candidate session's displayed lines back from the recording through the
``output_lines`` callable the caller passes (``bastion.search_indexer.OutputLines``:
the same emulator and masks the indexer ran), so the index stays smaller than the
recordings it covers (docs/decisions.md, "Search: postings in the index, lines in
the recording").

SQLite: a contentless FTS5 table with the trigram tokenizer, ``detail=none`` (no
positions), queried with every trigram of the text; stored lines live in ``body``
(zlib). PostgreSQL: stored lines in ``text`` (TOAST compresses it) under a
``pg_trgm`` GIN index, queried with ``ILIKE``; output chunks as a Bloom signature
of their trigrams (``trigram_bloom``) in ``sig``. Texts shorter than three
characters cannot use a trigram index and scan the chunks (re-reading at most
``UNINDEXED_OUTPUT_SESSIONS`` sessions' output).

``replace_session_index`` swaps a session's chunks and its marker in one
transaction (a very large session: in ~1 MiB transactions, the marker last), so
an index interrupted half-way is either complete or unmarked and redone by the
next ``reindex``, and running it twice gives the same rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from bastion.errors import UsageError
from bastion.store import rows, trigram_bloom
from bastion.store.backends import Backend, Row, Tx
from bastion.store.history import where_clause
from bastion.store.models import IndexHit, SessionRecord

KINDS = ("commands", "output", "queries", "results", "files")
"""What the index holds, in the order ``--in`` lists them."""

POSTINGS_ONLY = frozenset({"output"})
"""Kinds whose lines the index does not store (read back from the recording)."""

UNINDEXED_OUTPUT_SESSIONS = 100
"""Sessions whose output a search that cannot use the index re-reads at most."""


class OutputLines(Protocol):
    """Reads a session's displayed lines (text -> first offset) as the indexer saw them;
    None when they cannot be read (no recording). ``must_show``: see
    ``bastion.search_indexer.OutputLines``."""

    def __call__(
        self, session_id: str, must_show: str | None = None, in_stream: bool = False
    ) -> Mapping[str, float] | None: ...


_CHUNK_TEXT = 64 * 1024  # characters of lines per chunk
_FILE_AUDIT_LAG = 60.0  # file rows are spawned as the channel closes: a little after the end
_SCAN_BATCH = 200  # chunks fetched per query while collecting hits
_CHUNKS_PER_TX = 16  # chunks (of up to _CHUNK_TEXT characters) per index write transaction


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


Chunk = tuple[str, list[float], list[str], set[str], set[str]]
"""(kind, offsets, lines, the lines' distinct case-folded trigrams, digit 4-grams)."""


def _chunks(entries: Sequence[tuple[str, float, str]]) -> Iterator[Chunk]:
    """The chunks of a session's entries, lines in offset order within a kind."""
    by_kind: dict[str, list[tuple[float, str]]] = {}
    for kind, offset, text in entries:
        by_kind.setdefault(kind, []).append((float(offset), _one_line(text)))
    for kind in sorted(by_kind):
        items = sorted(by_kind[kind])
        offsets: list[float] = []
        lines: list[str] = []
        grams: set[str] = set()
        quads: set[str] = set()
        size = 0
        for offset, text in items:
            new = trigram_bloom.line_grams(text)
            if lines and (
                size + len(text) > _CHUNK_TEXT
                or len(grams) + len(new - grams) > trigram_bloom.MAX_GRAMS
            ):
                yield kind, offsets, lines, grams, quads
                offsets, lines, grams, quads, size = [], [], set(), set(), 0
            offsets.append(offset)
            lines.append(text)
            grams |= new
            quads |= trigram_bloom.digit_quads(text)
            size += len(text) + 1
        if lines:
            yield kind, offsets, lines, grams, quads


def _digest(offsets: list[float], lines: list[str]) -> bytes:
    """What a chunk held, stored with it (its lines may not be)."""
    data = json.dumps([offsets, lines], separators=(",", ":")).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def _trigram_query(text: str) -> str:
    """An FTS5 query every row holding ``text`` matches: all of its trigrams."""
    grams = sorted({text[i : i + 3] for i in range(len(text) - 2)})
    return " AND ".join('"' + g.replace('"', '""') + '"' for g in grams)


def _quads_text(quads: set[str]) -> str:
    """A chunk's digit 4-grams as the ``search_digits`` row's text (one word each)."""
    return " ".join(sorted(quads))


# SQL here is built only from fixed text and "?" marks; every value is a parameter.
class SearchIndex:
    """Index chunks of a ``Store``."""

    _db: Backend

    def replace_session_index(
        self,
        session_id: str,
        entries: Sequence[tuple[str, float, str]],
        *,
        source_bytes: int,
        now: float,
        output_in_stream: bool = False,
    ) -> None:
        """Make ``entries`` (kind, offset, text) the session's index and mark it indexed.

        ``output_in_stream``: every output line is in the recording's plain stream
        (``bastion.search_entries.stream_holds_lines``), kept on the output chunks.

        Up to ``_CHUNKS_PER_TX`` chunks (~1 MiB of text) this is one transaction. A
        bigger session (a dump scrolled past, megabytes of base64) is written in
        transactions of that size: one write transaction over all of it held the
        SQLite write lock for as long as the trigram inserts took, seconds in the
        niced indexer, and every other writer (the node, a CLI) waited out its busy
        timeout. The first of them drops the old rows and the marker, the last one
        sets the marker; a run cut in between leaves the session unmarked, so the
        next ``reindex`` drops the partial rows and writes them again.
        """
        chunks = list(_chunks(entries))
        batches = [
            chunks[i : i + _CHUNKS_PER_TX] for i in range(0, len(chunks), _CHUNKS_PER_TX)
        ] or [[]]
        for n, batch in enumerate(batches):
            with self._db.transaction(write=True) as tx:
                if n == 0:
                    self._delete_chunks(tx, session_id)
                    tx.run("DELETE FROM search_indexed WHERE session_id = ?", [session_id])
                self._insert_chunks(tx, session_id, batch, output_in_stream)
                if n == len(batches) - 1:
                    tx.run(
                        "INSERT INTO search_indexed (session_id, indexed_at, entries,"
                        " source_bytes) VALUES (?, ?, ?, ?)",
                        [session_id, float(now), len(entries), int(source_bytes)],
                    )

    def _insert_chunks(
        self, tx: Tx, session_id: str, chunks: Sequence[Chunk], in_stream: bool = False
    ) -> None:
        """Insert chunks; a postings-only kind's lines are not stored (``offsets`` is
        empty: its lines come from the recording)."""
        sqlite = self._db.name == "sqlite"
        for kind, offsets, lines, grams, quads in chunks:
            text = "\n".join(lines)
            digest = _digest(offsets, lines)
            stored = kind not in POSTINGS_ONLY
            packed = zlib.compress(json.dumps(offsets).encode(), 6) if stored else b""
            flag = in_stream and not stored
            head = [session_id, kind, offsets[0], len(lines), packed, digest, flag]
            columns = "session_id, kind, first_offset, lines, offsets, digest, in_stream"
            if sqlite:
                body = zlib.compress(text.encode(), 6) if stored else None
                chunk_id = tx.insert(
                    f"INSERT INTO search_chunks ({columns}, body)"  # noqa: S608  fixed SQL
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [*head, body],
                )
                tx.run("INSERT INTO search_fts (rowid, text) VALUES (?, ?)", [chunk_id, text])
                if quads:
                    tx.run(
                        "INSERT INTO search_digits (rowid, text) VALUES (?, ?)",
                        [chunk_id, _quads_text(quads)],
                    )
            else:  # every chunk by its signature; the small kinds' lines stored beside
                tx.run(
                    f"INSERT INTO search_chunks ({columns}, text, sig)"  # noqa: S608  fixed SQL
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?::varbit)",
                    [*head, text if stored else None,
                     trigram_bloom.signature(trigram_bloom.items(grams, quads))],
                )  # fmt: skip

    def _delete_chunks(self, tx: Tx, session_id: str) -> None:
        """Drop a session's chunks. SQLite: a contentless FTS5 row can only be deleted
        with its text, which a postings-only chunk no longer has; its postings stay
        behind under a rowid no chunk will have again (AUTOINCREMENT), and every
        search joins the chunks, so they are never a hit (a re-indexed session's
        old output postings are dead weight until a full ``reindex --again``)."""
        if self._db.name == "sqlite":
            for r in tx.all(
                "SELECT id, body, digest FROM search_chunks"
                " WHERE session_id = ? AND body IS NOT NULL",
                [session_id],
            ):
                text = zlib.decompress(r["body"]).decode()
                tx.run(
                    "INSERT INTO search_fts (search_fts, rowid, text) VALUES ('delete', ?, ?)",
                    [r["id"], text],
                )
                quads = {q for line in text.split("\n") for q in trigram_bloom.digit_quads(line)}
                if quads and r["digest"] is not None:  # rows older than search_digits: none
                    tx.run(
                        "INSERT INTO search_digits (search_digits, rowid, text)"
                        " VALUES ('delete', ?, ?)",
                        [r["id"], _quads_text(quads)],
                    )
        tx.run("DELETE FROM search_chunks WHERE session_id = ?", [session_id])

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
        """A session's entries (kind, offset, text) in a stable order (tests, checks);
        a postings-only chunk as one entry (kind, first offset, ``#digest N lines``)."""
        with self._db.transaction() as tx:
            found = tx.all(
                "SELECT id, kind, first_offset, lines, digest, offsets, body, text"
                " FROM search_chunks WHERE session_id = ?",
                [session_id],
            )
        out: list[tuple[str, float, str]] = []
        for r in found:
            if _stored(r):
                out += [(str(r["kind"]), offset, line) for offset, line in _lines(r)]
            else:
                summary = f"#{bytes(r['digest']).hex()} {int(r['lines'])} lines"
                out.append((str(r["kind"]), float(r["first_offset"]), summary))
        return sorted(out)

    def clear_search_index(self) -> None:
        """Drop the whole index and every marker (``reindex --again`` over everything):
        on SQLite this also drops the postings re-indexed sessions left behind."""
        with self._db.transaction(write=True) as tx:
            if self._db.name == "sqlite":
                tx.run("INSERT INTO search_fts (search_fts) VALUES ('delete-all')")
                tx.run("INSERT INTO search_digits (search_digits) VALUES ('delete-all')")
            tx.run("DELETE FROM search_chunks")
            tx.run("DELETE FROM search_indexed")

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
                " AND action LIKE ? ORDER BY id",
                [session.started_at - 60.0, end + _FILE_AUDIT_LAG, "file.%"],
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
        output_lines: OutputLines | None = None,
    ) -> list[IndexHit]:
        """Lines containing ``text`` (case-insensitive; ``regex``: matching the Python
        pattern ``text``), newest session first, then by offset.

        Terminal output is matched in the lines ``output_lines`` reads back for each
        candidate session (without it, output is not searched). A search the index
        cannot narrow (under three plain characters) re-reads the output of at most
        ``UNINDEXED_OUTPUT_SESSIONS`` sessions, then stops with a UsageError saying
        how to narrow it.
        """
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise UsageError(
                f"--in takes {','.join(KINDS)} (comma-separated), not {','.join(sorted(unknown))}"
            )
        needle, matches = _matcher(text, regex)
        indexed = needle is not None and len(needle) >= 3
        sql, params = self._search_sql(needle, kinds, user, target, since)
        hits: list[IndexHit] = []
        read_back: set[str] = set()
        last_session: str | None = None
        offset = 0
        while True:
            with self._db.transaction() as tx:
                self._plain_plan(tx)
                found = tx.all(sql + " LIMIT ? OFFSET ?", [*params, _SCAN_BATCH, offset])
            for r in found:
                session_id = str(r["session_id"])
                if len(hits) >= limit and session_id != last_session:
                    return _ordered(hits)[:limit]
                last_session = session_id
                if _stored(r):
                    lines = _lines(r)
                elif output_lines is None or session_id in read_back:
                    continue
                else:
                    if not indexed and len(read_back) >= UNINDEXED_OUTPUT_SESSIONS:
                        raise UsageError(
                            f"{text!r} cannot use the index for terminal output (it needs"
                            " three plain characters in a row) and re-reading the output of"
                            f" {UNINDEXED_OUTPUT_SESSIONS} sessions found {len(hits)} of"
                            f" {limit} hits: narrow it with --since, --user or --target,"
                            " or leave output out (--in commands,queries,results,files)"
                        )
                    read_back.add(session_id)
                    # a text with "*" may span a mask's "***": no stream holds that
                    ruled = indexed and bool(r["in_stream"]) and "*" not in str(needle)
                    hint = str(needle).lower() if ruled else None
                    shown = output_lines(session_id, hint, bool(r["in_stream"])) or {}
                    lines = sorted((at, line) for line, at in shown.items())
                started = float(r["started_at"])
                for at, line in lines:
                    if since is not None and started + at < since:
                        continue
                    if matches(line):
                        hits.append(
                            IndexHit(
                                session_id, str(r["kind"]), at, started + at, line,
                                str(r["user_name"]), str(r["target_name"]),
                            )
                        )  # fmt: skip
            if len(found) < _SCAN_BATCH:
                return _ordered(hits)[:limit]
            offset += _SCAN_BATCH

    def _plain_plan(self, tx: Tx) -> None:
        """PostgreSQL: no JIT for a search. Its scan of the signatures is cheap per row,
        but on a large index the planner's estimate passes ``jit_above_cost`` and
        compiling the query would cost more (~0.1 s) than running it."""
        if self._db.name == "postgresql":
            tx.run("SET LOCAL jit = off")

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
        columns = "c.id, c.session_id, c.kind, c.offsets, c.body, c.text, c.in_stream"
        source = "search_chunks c"
        quads = trigram_bloom.digit_quads(needle) if needle is not None else set()
        if needle is not None and len(needle) >= 3:
            if self._db.name == "sqlite":
                source = "search_fts JOIN search_chunks c ON c.id = search_fts.rowid"
                where.append("search_fts MATCH ?")
                params.append(_trigram_query(needle))
                if quads:
                    where.append(
                        "c.id IN (SELECT rowid FROM search_digits WHERE search_digits MATCH ?)"
                    )
                    params.append(" AND ".join(f'"{q}"' for q in sorted(quads)))
            else:  # the signatures (rows from before them have none: always candidates)
                classes = ", ".join("(?::varbit)" for _ in trigram_bloom.SIZES)
                where.append(
                    f"(c.sig IS NULL OR EXISTS (SELECT 1 FROM (VALUES {classes}) AS q (mask)"  # noqa: S608  fixed SQL, ? values
                    " WHERE bit_length(q.mask) = bit_length(c.sig) AND CASE WHEN"
                    " bit_length(q.mask) = bit_length(c.sig) THEN c.sig & q.mask = q.mask END))"
                )
                wanted = trigram_bloom.items(trigram_bloom.line_grams(needle), quads)
                params += trigram_bloom.masks(wanted)
        where.append("c.kind IN (" + ", ".join("?" * len(kinds)) + ")")
        params += list(kinds)
        for column, name in (("u.name", user), ("t.name", target)):
            if name is not None:
                where.append(f"{column} = ?")
                params.append(name)
        if since is not None:
            where.append("s.ended_at >= ?")
            params.append(float(since))
        sql = (
            f"SELECT {columns}, s.started_at,"  # noqa: S608  fixed SQL, ? values
            " u.name AS user_name, t.name AS target_name FROM "
            + source
            + " JOIN sessions s ON s.id = c.session_id"
            " JOIN users u ON u.id = s.user_id JOIN targets t ON t.id = s.target_id"
            + where_clause(where)
            + " ORDER BY s.started_at DESC, c.session_id, c.id"
        )
        return sql, params


def _stored(r: Row) -> bool:
    """True if the chunk row carries its lines (not a postings-only chunk)."""
    return bool(r["offsets"])


def _lines(r: Row) -> list[tuple[float, str]]:
    """(offset, line) of a chunk row."""
    offsets = json.loads(zlib.decompress(r["offsets"]))
    body = r["body"]
    text = zlib.decompress(body).decode() if body is not None else str(r["text"])
    return list(zip((float(o) for o in offsets), text.split("\n"), strict=False))


def _matcher(text: str, regex: bool) -> tuple[str | None, Callable[[str], bool]]:
    """What narrows the chunks (None: nothing can) and what a matching line is."""
    if regex:
        try:
            pattern = re.compile(text)
        except re.error as e:
            raise UsageError(f"--regex: {text!r} is not a valid pattern ({e})") from e
        literal = _longest_literal(text)  # narrow with the trigram index, check in Python
        return (
            literal if len(literal) >= 3 else None
        ), lambda line: pattern.search(line) is not None
    folded = _one_line(text).lower()
    return folded, lambda line: folded in line.lower()


def _ordered(hits: list[IndexHit]) -> list[IndexHit]:
    """Newest session first (the query's order), then by offset within a session."""
    order = {sid: i for i, sid in enumerate(dict.fromkeys(h.session_id for h in hits))}
    return sorted(hits, key=lambda h: (order[h.session_id], h.offset, h.kind, h.text))


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
