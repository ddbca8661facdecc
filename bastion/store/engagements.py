"""The state store's engagement queries: sponsor and end date, reminders, the end itself.

A mixin of ``Store`` (like ``Tokens`` and ``Requests``). The store records and
answers; it never refuses a user without an end date (the CLI and ``apply`` do,
per ``[users] require_end_date``). Every node runs the same end-of-engagement
pass, so the steps that must happen once are conditional UPDATEs: the node whose
UPDATE changed the row does the work, the others see 0 rows and move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bastion.errors import NotFound
from bastion.store import rows
from bastion.store.backends import Backend, Tx
from bastion.store.models import RequestState, User

if TYPE_CHECKING:
    from bastion.secretbox import SecretBox

UNSET: Any = object()
"""``set_engagement``'s marker for "leave this field as it is"."""


class Engagements:
    """Engagement columns of ``users``; mixed into ``Store``."""

    _db: Backend
    _box: SecretBox

    def _named_user(self, tx: Tx, name: str) -> User:
        row = tx.one(f"SELECT {rows.USER_COLUMNS} FROM users WHERE name = ?", [name])  # noqa: S608  fixed SQL, ? values
        if row is None:
            raise NotFound(f"no user named '{name}'; see 'bastion user list'")
        return rows.user(row, self._box)

    def set_engagement(
        self,
        name: str,
        *,
        sponsor: str | None = UNSET,
        until: float | None = UNSET,
        org: str | None = UNSET,
    ) -> User:
        """Set a user's sponsor, end date and/or organisation. Raises NotFound.

        A new end date forgets the reminders sent for the old one and, if it lies
        after the moment the engagement was ended, that end: the user stays
        disabled until an admin enables them (``bastion user enable``).
        """
        with self._db.transaction(write=True) as tx:
            return self._set_engagement_tx(tx, name, sponsor=sponsor, until=until, org=org)

    def _set_engagement_tx(
        self, tx: Tx, name: str, *, sponsor: Any = UNSET, until: Any = UNSET, org: Any = UNSET
    ) -> User:
        sets: list[str] = []
        params: list[Any] = []
        if sponsor is not UNSET:
            sets.append("sponsor = ?")
            params.append(sponsor)
        if org is not UNSET:
            sets.append("org = ?")
            params.append(org)
        if until is not UNSET:
            sets += ["engagement_until = ?", "engagement_reminded = NULL"]
            params.append(None if until is None else float(until))
        if sets:
            sql = f"UPDATE users SET {', '.join(sets)} WHERE name = ?"  # noqa: S608  fixed column names
            if tx.run(sql, [*params, name]) == 0:
                raise NotFound(f"no user named '{name}'; see 'bastion user list'")
        if until is not UNSET:
            tx.run(
                "UPDATE users SET engagement_ended_at = NULL WHERE name = ?"
                " AND engagement_ended_at IS NOT NULL"
                " AND (engagement_until IS NULL OR engagement_until > engagement_ended_at)",
                [name],
            )
        return self._named_user(tx, name)

    def engagements_ending(self, now: float) -> list[User]:
        """Users whose engagement has reached its end but was not yet ended by any node."""
        with self._db.transaction() as tx:
            found = tx.all(
                f"SELECT {rows.USER_COLUMNS} FROM users"  # noqa: S608  fixed SQL, ? values
                " WHERE engagement_until IS NOT NULL AND engagement_until <= ?"
                " AND engagement_ended_at IS NULL ORDER BY engagement_until",
                [float(now)],
            )
        return [rows.user(r, self._box) for r in found]

    def engagements_to_remind(self, now: float, within: float) -> list[User]:
        """Users whose engagement ends after ``now`` but within ``within`` seconds."""
        with self._db.transaction() as tx:
            found = tx.all(
                f"SELECT {rows.USER_COLUMNS} FROM users"  # noqa: S608  fixed SQL, ? values
                " WHERE engagement_until IS NOT NULL AND engagement_until > ?"
                " AND engagement_until <= ? AND engagement_ended_at IS NULL"
                " AND disabled = ? ORDER BY engagement_until",
                [float(now), float(now + within), False],
            )
        return [rows.user(r, self._box) for r in found]

    def engagement_ends(self, names: Sequence[str]) -> dict[str, float]:
        """End dates of these users' engagements (users without one are left out)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        with self._db.transaction() as tx:
            found = tx.all(
                "SELECT name, engagement_until FROM users"  # noqa: S608  fixed SQL, ? values
                f" WHERE name IN ({marks}) AND engagement_until IS NOT NULL",
                wanted,
            )
        return {str(r["name"]): float(r["engagement_until"]) for r in found}

    def claim_reminder(self, user_id: int, days: int, until: float) -> bool:
        """Mark the ``days``-before reminder of the end ``until`` as sent; False: already was.

        One conditional UPDATE, so of all nodes exactly one sends each reminder, and
        none is sent for an end date that changed meanwhile.
        """
        with self._db.transaction(write=True) as tx:
            changed = tx.run(
                "UPDATE users SET engagement_reminded = ? WHERE id = ? AND engagement_until = ?"
                " AND (engagement_reminded IS NULL OR engagement_reminded > ?)",
                [int(days), user_id, float(until), int(days)],
            )
        return changed == 1

    def _end_engagement_tx(self, tx: Tx, user_id: int, now: float) -> bool:
        """Disable a user whose engagement has ended; False if another node already did."""
        changed = tx.run(
            "UPDATE users SET disabled = ?, engagement_ended_at = ? WHERE id = ?"
            " AND engagement_ended_at IS NULL AND engagement_until IS NOT NULL"
            " AND engagement_until <= ?",
            [True, float(now), user_id, float(now)],
        )
        return changed == 1

    def _live_session_ids_tx(self, tx: Tx, user_id: int) -> list[str]:
        found = tx.all(
            "SELECT id FROM sessions WHERE user_id = ? AND ended_at IS NULL ORDER BY id", [user_id]
        )
        return [str(r["id"]) for r in found]

    def _drop_user_requests_tx(self, tx: Tx, user_id: int, at: float, reason: str) -> list[int]:
        """Drop every pending request of a user (by ``bastion``, with ``reason``)."""
        ids = [
            int(r["id"])
            for r in tx.all(
                "SELECT id FROM access_requests WHERE user_id = ? AND state = ? ORDER BY id",
                [user_id, RequestState.PENDING.value],
            )
        ]
        for request_id in ids:
            tx.run(
                "UPDATE access_requests SET state = ?, decided_at = ?, decided_by = ?,"
                " decision_reason = ? WHERE id = ? AND state = ?",
                [
                    RequestState.DROPPED.value, float(at), "bastion", reason, request_id,
                    RequestState.PENDING.value,
                ],
            )  # fmt: skip
        return ids
