"""Append-only history: sessions, issued certificates and the hash-chained audit log.

A mixin of ``Store`` (kept apart to keep modules small); it only needs the
backend in ``self._db``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.errors import AlreadyExists, NotFound, StoreError
from bastion.store import rows
from bastion.store.audit_chain import (
    GENESIS_HASH,
    canonical_json,
    event_hash,
    first_broken,
    normalize_details,
)
from bastion.store.backends import Backend, Tx
from bastion.store.models import AuditEvent, CertificateRecord, CommandHit, SessionRecord
from bastion.store.wakeups import WAKE_CHANNEL, WakeKind, Wakeup

#: Advisory lock key serialising audit appends across nodes ("bastion" + 0x02).
AUDIT_LOCK = 0x62617374696F6E02
_VERIFY_BATCH = 1000


def where_clause(clauses: Sequence[str]) -> str:
    """`` WHERE a AND b`` for a list of conditions (empty for none)."""
    return " WHERE " + " AND ".join(clauses) if clauses else ""


def _who_where(
    user: str | None, target: str | None, since: float | None, time_column: str
) -> tuple[list[str], list[Any]]:
    """Conditions on user name (``u``), target name (``t``) and a start time."""
    where: list[str] = []
    params: list[Any] = []
    if user is not None:
        where.append("u.name = ?")
        params.append(user)
    if target is not None:
        where.append("t.name = ?")
        params.append(target)
    if since is not None:
        where.append(f"{time_column} >= ?")
        params.append(float(since))
    return where, params


# SQL here is built only from fixed text: the column lists in rows.py, conditions
# written in this file and "?" marks; every value is a parameter ("noqa: S608" below).
class History:
    """Sessions, certificates and audit events of a ``Store``."""

    _db: Backend

    # ---------------------------------------------------------------- sessions

    def start_session(self, rec: SessionRecord) -> None:
        """Record a session that has just begun. Raises AlreadyExists for a reused id."""
        try:
            with self._db.transaction(write=True) as tx:
                tx.run(
                    "INSERT INTO sessions (id, user_id, target_id, grant_id, node, protocol,"
                    " login, client_addr, started_at, ended_at, end_reason, recording,"
                    " bytes_in, bytes_out, events, final_hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        rec.id, rec.user_id, rec.target_id, rec.grant_id, rec.node,
                        rec.protocol, rec.login, rec.client_addr, float(rec.started_at),
                        rec.ended_at, rec.end_reason, rec.recording, rec.bytes_in,
                        rec.bytes_out, rec.events, rec.final_hash,
                    ],
                )  # fmt: skip
        except AlreadyExists as e:
            raise AlreadyExists(f"session {rec.id} already exists") from e

    def end_session(
        self,
        session_id: str,
        *,
        ended_at: float,
        reason: str,
        bytes_in: int,
        bytes_out: int,
        events: int = 0,
        final_hash: str | None = None,
        recording: str | None = None,
        final_signature: str | None = None,
    ) -> None:
        """Close a live session; None for recording/final_hash/signature keeps the stored value.

        Raises NotFound, or StoreError if the session already ended.
        """
        with self._db.transaction(write=True) as tx:
            changed = tx.run(
                "UPDATE sessions SET ended_at = ?, end_reason = ?, bytes_in = ?, bytes_out = ?,"
                " events = ?, final_hash = COALESCE(?, final_hash),"
                " recording = COALESCE(?, recording),"
                " final_signature = COALESCE(?, final_signature)"
                " WHERE id = ? AND ended_at IS NULL",
                [float(ended_at), reason, bytes_in, bytes_out, events, final_hash, recording,
                 final_signature, session_id],
            )  # fmt: skip
            if changed == 0:
                row = tx.one("SELECT end_reason FROM sessions WHERE id = ?", [session_id])
                if row is None:
                    raise NotFound(f"no session {session_id}; see 'bastion sessions list'")
                raise StoreError(f"session {session_id} already ended ({row['end_reason']})")

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session with this id, or None."""
        with self._db.transaction() as tx:
            row = tx.one(f"{rows.SESSION_SELECT} WHERE s.id = ?", [session_id])
        return None if row is None else rows.session(row)

    def list_sessions(
        self,
        *,
        live: bool | None = None,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        limit: int = 200,
        node: str | None = None,
    ) -> list[SessionRecord]:
        """Sessions of every node, newest first; ``live`` True/False picks running/ended
        ones, ``node`` those of one node."""
        where, params = _who_where(user, target, since, "s.started_at")
        if live is not None:
            where.append("s.ended_at IS NULL" if live else "s.ended_at IS NOT NULL")
        if node is not None:
            where.append("s.node = ?")
            params.append(node)
        order = " ORDER BY s.started_at DESC, s.id DESC LIMIT ?"
        sql = rows.SESSION_SELECT + where_clause(where) + order
        with self._db.transaction() as tx:
            return [rows.session(r) for r in tx.all(sql, [*params, int(limit)])]

    def update_recording_hash(self, session_id: str, final_hash: str, final_signature: str) -> None:
        """Point an ended session at its repacked recording's final hash and signature."""
        with self._db.transaction(write=True) as tx:
            if (
                tx.run(
                    "UPDATE sessions SET final_hash = ?, final_signature = ? WHERE id = ?",
                    [final_hash, final_signature, session_id],
                )
                == 0
            ):
                raise NotFound(f"no session {session_id}; see 'bastion sessions list'")

    def move_recording(self, session_id: str, old: str, new: str) -> bool:
        """Point an ended session's recording from ``old`` (its spool location) to ``new``
        (where it was uploaded); False if the row no longer says ``old``."""
        with self._db.transaction(write=True) as tx:
            changed = tx.run(
                "UPDATE sessions SET recording = ? WHERE id = ? AND recording = ?"
                " AND ended_at IS NOT NULL",
                [new, session_id, old],
            )
        return changed > 0

    def sessions_with_recordings_not_in(
        self, prefix: str, limit: int = 10_000
    ) -> list[SessionRecord]:
        """Ended sessions whose recording location does not start with ``prefix`` (oldest
        first): with S3 storage, the recordings still only in some node's spool."""
        sql = (
            rows.SESSION_SELECT + " WHERE s.ended_at IS NOT NULL AND s.recording IS NOT NULL"
            " AND substr(s.recording, 1, ?) <> ? ORDER BY s.started_at, s.id LIMIT ?"
        )
        with self._db.transaction() as tx:
            return [rows.session(r) for r in tx.all(sql, [len(prefix), prefix, int(limit)])]

    def request_termination(self, session_id: str, by: str, reason: str, at: float) -> None:
        """Ask the node running a live session to end it (within one time-box pass).

        Raises NotFound, or StoreError if the session already ended.
        """
        with self._db.transaction(write=True) as tx:
            self._request_termination_tx(tx, session_id, by, reason, at)

    def _request_termination_tx(
        self, tx: Tx, session_id: str, by: str, reason: str, at: float
    ) -> None:
        changed = tx.run(
            "UPDATE sessions SET terminate_requested_at = ?, terminate_by = ?,"
            " terminate_reason = ? WHERE id = ? AND ended_at IS NULL",
            [float(at), by, reason, session_id],
        )
        if changed == 0:
            row = tx.one("SELECT end_reason FROM sessions WHERE id = ?", [session_id])
            if row is None:
                raise NotFound(f"no session {session_id}; see 'bastion sessions list --live'")
            raise StoreError(f"session {session_id} already ended ({row['end_reason']})")
        tx.notify(WAKE_CHANNEL, Wakeup(WakeKind.SESSION, session_id).payload())

    def _request_user_terminations_tx(
        self, tx: Tx, user_id: int, by: str, reason: str, at: float
    ) -> list[str]:
        """Ask for the end of every live session of a user; return their ids."""
        found = tx.all(
            "UPDATE sessions SET terminate_requested_at = ?, terminate_by = ?,"
            " terminate_reason = ? WHERE user_id = ? AND ended_at IS NULL RETURNING id",
            [float(at), by, reason, user_id],
        )
        ids = sorted(str(r["id"]) for r in found)
        for session_id in ids:
            tx.notify(WAKE_CHANNEL, Wakeup(WakeKind.SESSION, session_id).payload())
        return ids

    def termination_requests(self, session_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(by, reason) for each of these live sessions an admin asked to end."""
        result: dict[str, tuple[str, str]] = {}
        ids = sorted(set(session_ids))
        with self._db.transaction() as tx:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                for r in tx.all(
                    "SELECT id, terminate_by, terminate_reason FROM sessions"  # noqa: S608  fixed SQL, ? values
                    f" WHERE id IN ({marks}) AND terminate_requested_at IS NOT NULL",
                    chunk,
                ):
                    result[str(r["id"])] = (str(r["terminate_by"]), str(r["terminate_reason"]))
        return result

    def add_session_commands(
        self, session_id: str, commands: Sequence[tuple[float, str]], first_seq: int = 0
    ) -> None:
        """Store extracted commands (time, text) of a session, numbered from ``first_seq``."""
        if not commands:
            return
        with self._db.transaction(write=True) as tx:
            for i, (at, text) in enumerate(commands):
                tx.run(
                    "INSERT INTO session_commands (session_id, seq, at, text) VALUES (?, ?, ?, ?)",
                    [session_id, first_seq + i, float(at), text],
                )

    def search_commands(
        self,
        text: str,
        *,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[CommandHit]:
        """Commands containing ``text`` (case-insensitive), newest first."""
        pattern = (
            "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        where, params = _who_where(user, target, since, "c.at")
        where.insert(0, "LOWER(c.text) LIKE ? ESCAPE '\\'")
        params.insert(0, pattern)
        sql = (
            "SELECT c.session_id, c.seq, c.at, c.text, u.name AS user_name,"  # noqa: S608  fixed SQL, ? values
            " t.name AS target_name FROM session_commands c"
            " JOIN sessions s ON s.id = c.session_id"
            " JOIN users u ON u.id = s.user_id JOIN targets t ON t.id = s.target_id"
            + where_clause(where)
            + " ORDER BY c.at DESC, c.session_id, c.seq LIMIT ?"
        )
        with self._db.transaction() as tx:
            return [
                CommandHit(
                    r["session_id"],
                    int(r["seq"]),
                    float(r["at"]),
                    r["text"],
                    r["user_name"],
                    r["target_name"],
                )
                for r in tx.all(sql, [*params, int(limit)])
            ]

    # ------------------------------------------------------------ certificates

    def record_certificate(self, rec: CertificateRecord) -> None:
        """Log an issued certificate. Raises AlreadyExists for a reused serial."""
        try:
            with self._db.transaction(write=True) as tx:
                tx.run(
                    f"INSERT INTO certificates ({rows.CERTIFICATE_COLUMNS})"  # noqa: S608  fixed SQL, ? values
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        int(rec.serial), rec.key_id, rows.dump_list(rec.principals),
                        float(rec.valid_after), float(rec.valid_before), rec.session_id,
                        rec.user_id, rec.target_id, float(rec.issued_at),
                    ],
                )  # fmt: skip
        except AlreadyExists as e:
            raise AlreadyExists(f"certificate serial {rec.serial} was already recorded") from e

    def list_certificates(self, *, session_id: str | None = None) -> list[CertificateRecord]:
        """Issued certificates, oldest first, optionally for one session."""
        sql = f"SELECT {rows.CERTIFICATE_COLUMNS} FROM certificates"  # noqa: S608  fixed SQL, ? values
        params: list[Any] = []
        if session_id is not None:
            sql += " WHERE session_id = ?"
            params.append(session_id)
        with self._db.transaction() as tx:
            found = tx.all(sql + " ORDER BY issued_at, serial", params)
        return [rows.certificate(r) for r in found]

    # ------------------------------------------------------------------- audit

    def append_audit(
        self,
        actor: str,
        action: str,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
        at: float | None = None,
    ) -> AuditEvent:
        """Append a hash-chained audit event (serialised across processes and nodes)."""
        with self._db.transaction(write=True) as tx:
            return self._append_audit_tx(tx, actor, action, subject, details, at)

    def _append_audit_tx(
        self,
        tx: Tx,
        actor: str,
        action: str,
        subject: str | None,
        details: Mapping[str, Any] | None,
        at: float | None,
    ) -> AuditEvent:
        """``append_audit`` inside a caller's write transaction (see ``audited_change``)."""
        when = float(time.time() if at is None else at)
        clean = normalize_details(details)
        body = canonical_json(clean)
        tx.lock(AUDIT_LOCK)
        last = tx.one("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
        event_id = int(last["id"]) + 1 if last else 1
        prev = str(last["hash"]) if last else GENESIS_HASH
        digest = event_hash(
            prev, id=event_id, at=when, actor=actor, action=action, subject=subject,
            details=clean,
        )  # fmt: skip
        tx.run(
            f"INSERT INTO audit ({rows.AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608  fixed column list, ? values
            [event_id, when, actor, action, subject, body, prev, digest],
        )
        return AuditEvent(event_id, when, actor, action, subject, clean, prev, digest)

    def list_audit(
        self,
        *,
        since: float | None = None,
        actor: str | None = None,
        action_prefix: str | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """The most recent ``limit`` matching events, oldest first; ``since`` is inclusive."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("at >= ?")
            params.append(float(since))
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        if action_prefix:
            where.append("substr(action, 1, CAST(? AS INTEGER)) = ?")
            params += [len(action_prefix), action_prefix]
        sql = (
            f"SELECT {rows.AUDIT_COLUMNS} FROM audit{where_clause(where)} ORDER BY id DESC LIMIT ?"  # noqa: S608  fixed SQL, ? values
        )
        with self._db.transaction() as tx:
            found = tx.all(sql, [*params, int(limit)])
        return [rows.audit_event(r) for r in reversed(found)]

    def audit_after(
        self,
        cursor: int,
        *,
        actor: str | None = None,
        action_prefix: str | None = None,
        limit: int = 500,
    ) -> list[AuditEvent]:
        """Up to ``limit`` events with an id above ``cursor``, in id order (``audit --follow``).

        Without gaps: an id is assigned under ``AUDIT_LOCK`` inside the appending
        transaction (SQLite: one writer at a time), so a row can only commit after
        every row with a smaller id did (docs/decisions.md, "The audit feed").
        """
        where = ["id > ?"]
        params: list[Any] = [int(cursor)]
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        if action_prefix:
            where.append("substr(action, 1, CAST(? AS INTEGER)) = ?")
            params += [len(action_prefix), action_prefix]
        sql = f"SELECT {rows.AUDIT_COLUMNS} FROM audit{where_clause(where)} ORDER BY id LIMIT ?"  # noqa: S608  fixed SQL, ? values
        with self._db.transaction() as tx:
            found = tx.all(sql, [*params, int(limit)])
        return [rows.audit_event(r) for r in found]

    def last_audit_id(self) -> int:
        """The id of the newest audit event (0 when there is none): a cursor for "from now"."""
        with self._db.transaction() as tx:
            row = tx.one("SELECT MAX(id) AS last FROM audit")
        return int(row["last"]) if row is not None and row["last"] is not None else 0

    def verify_audit_chain(self) -> int | None:
        """None if the chain is intact, else the id of the first row that does not fit.

        Detects edited, deleted and reordered rows; truncation of the newest rows
        needs an external anchor (compare the last hash with a copy kept elsewhere).
        """
        prev, after = GENESIS_HASH, 0
        while True:
            with self._db.transaction() as tx:
                batch = tx.all(
                    f"SELECT {rows.AUDIT_COLUMNS} FROM audit WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608  fixed SQL, ? values
                    [after, _VERIFY_BATCH],
                )
            if not batch:
                return None
            broken = first_broken(batch, prev)
            if broken is not None:
                return broken
            prev, after = str(batch[-1]["hash"]), int(batch[-1]["id"])
