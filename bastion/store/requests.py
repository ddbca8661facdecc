"""Access requests, their approvals, user groups and per-target request policy.

A mixin of ``Store`` (kept apart to keep modules small). It only stores: the
rules (who may approve, narrowing, when the clock starts) live in
``bastion.access_requests``. Requests are never deleted; a decided request keeps
its history, and a grant made from one carries its id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bastion.errors import NotFound, StoreError
from bastion.store import rows
from bastion.store.backends import Backend, Tx
from bastion.store.history import where_clause
from bastion.store.models import (
    AccessRequest,
    Approval,
    GrantState,
    HeldCommand,
    RequestKind,
    RequestState,
)

_REQUEST_SELECT = (
    "SELECT r.id, r.user_id, u.name AS user_name, r.kind, r.targets, r.login, r.options,"
    " r.duration, r.start_at, r.reason, r.state, r.extends_grant_id, r.created_at,"
    " r.lapses_at, r.decided_at, r.decided_by, r.decision_reason, r.reviewed_at,"
    " r.reviewed_by, r.review_note, r.client_addr, r.profile,"
    " r.held_kind, r.held_text, r.held_session, r.held_rule"
    " FROM access_requests r JOIN users u ON u.id = r.user_id"
)


def _no_request(request_id: int) -> NotFound:
    return NotFound(f"no request #{request_id}; see 'bastion request list'")


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def _held(r: Any) -> HeldCommand | None:
    if r["held_kind"] is None:
        return None
    return HeldCommand(r["held_kind"], r["held_text"], r["held_session"], r["held_rule"])


# SQL here is built only from fixed text and "?" marks; every value is a parameter.
class Requests:
    """Access requests of a ``Store``."""

    _db: Backend

    # ----------------------------------------------------------------- reading

    def _approvals(self, tx: Tx, request_id: int) -> tuple[Approval, ...]:
        found = tx.all(
            "SELECT approver, at, duration, targets, options, reason FROM request_approvals"
            " WHERE request_id = ? ORDER BY at, approver",
            [request_id],
        )
        return tuple(
            Approval(
                approver=r["approver"],
                at=float(r["at"]),
                duration=_opt(r["duration"]),
                targets=rows.load_list(r["targets"]) if r["targets"] is not None else None,
                options=frozenset(rows.load_list(r["options"]))
                if r["options"] is not None
                else None,
                reason=r["reason"],
            )
            for r in found
        )

    def _request_from(self, tx: Tx, r: Any) -> AccessRequest:
        request_id = int(r["id"])
        grant_ids = tuple(
            int(g["id"])
            for g in tx.all("SELECT id FROM grants WHERE request_id = ? ORDER BY id", [request_id])
        )
        return AccessRequest(
            id=request_id,
            user_id=int(r["user_id"]),
            user_name=r["user_name"],
            kind=RequestKind(r["kind"]),
            targets=rows.load_list(r["targets"]),
            login=r["login"],
            options=frozenset(rows.load_list(r["options"])),
            duration=float(r["duration"]),
            start_at=_opt(r["start_at"]),
            reason=r["reason"],
            state=RequestState(r["state"]),
            created_at=float(r["created_at"]),
            lapses_at=float(r["lapses_at"]),
            extends_grant_id=None if r["extends_grant_id"] is None else int(r["extends_grant_id"]),
            decided_at=_opt(r["decided_at"]),
            decided_by=r["decided_by"],
            decision_reason=r["decision_reason"],
            reviewed_at=_opt(r["reviewed_at"]),
            reviewed_by=r["reviewed_by"],
            review_note=r["review_note"],
            client_addr=r["client_addr"],
            approvals=self._approvals(tx, request_id),
            grant_ids=grant_ids,
            held=_held(r),
            profile=r["profile"],
        )

    def _request_tx(self, tx: Tx, request_id: int) -> AccessRequest:
        r = tx.one(f"{_REQUEST_SELECT} WHERE r.id = ?", [request_id])
        if r is None:
            raise _no_request(request_id)
        return self._request_from(tx, r)

    def get_request(self, request_id: int) -> AccessRequest | None:
        """The request with this id (with approvals and grants), or None."""
        with self._db.transaction() as tx:
            try:
                return self._request_tx(tx, request_id)
            except NotFound:
                return None

    def list_requests(
        self,
        *,
        user_id: int | None = None,
        state: RequestState | None = None,
        unreviewed: bool = False,
        limit: int = 500,
    ) -> list[AccessRequest]:
        """Requests, newest first; ``unreviewed``: break-glass ones nobody reviewed yet."""
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("r.user_id = ?")
            params.append(user_id)
        if state is not None:
            where.append("r.state = ?")
            params.append(RequestState(state).value)
        if unreviewed:
            where.append("r.kind = ? AND r.reviewed_at IS NULL")
            params.append(RequestKind.BREAK_GLASS.value)
        sql = f"{_REQUEST_SELECT}{where_clause(where)} ORDER BY r.id DESC LIMIT ?"
        with self._db.transaction() as tx:
            return [self._request_from(tx, r) for r in tx.all(sql, [*params, int(limit)])]

    # ----------------------------------------------------------------- writing

    def _add_request_tx(
        self,
        tx: Tx,
        *,
        user_id: int,
        kind: RequestKind,
        targets: Sequence[str],
        login: str | None,
        options: Iterable[str],
        duration: float,
        start_at: float | None,
        reason: str,
        now: float,
        lapses_at: float,
        extends_grant_id: int | None = None,
        client_addr: str | None = None,
        held: HeldCommand | None = None,
        profile: str | None = None,
    ) -> AccessRequest:
        if duration <= 0:
            raise StoreError("a request's duration must be positive")
        request_id = tx.insert(
            "INSERT INTO access_requests (user_id, kind, targets, login, options, duration,"
            " start_at, reason, state, extends_grant_id, created_at, lapses_at, client_addr,"
            " held_kind, held_text, held_session, held_rule, profile)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                user_id,
                RequestKind(kind).value,
                rows.dump_list(list(targets)),
                login,
                rows.dump_list(sorted(set(options))),
                float(duration),
                None if start_at is None else float(start_at),
                reason,
                RequestState.PENDING.value,
                extends_grant_id,
                float(now),
                float(lapses_at),
                client_addr,
                held.kind if held else None,
                held.text if held else None,
                held.session_id if held else None,
                held.rule if held else None,
                profile,
            ],
        )
        return self._request_tx(tx, request_id)

    def _add_approval_tx(
        self,
        tx: Tx,
        request_id: int,
        approver: str,
        at: float,
        *,
        duration: float | None,
        targets: Sequence[str] | None,
        options: Iterable[str] | None,
        reason: str | None,
    ) -> None:
        if tx.one(
            "SELECT 1 AS x FROM request_approvals WHERE request_id = ? AND approver = ?",
            [request_id, approver],
        ):
            raise StoreError(f"{approver} already approved request #{request_id}")
        tx.run(
            "INSERT INTO request_approvals (request_id, approver, at, duration, targets,"
            " options, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                request_id,
                approver,
                float(at),
                None if duration is None else float(duration),
                None if targets is None else rows.dump_list(list(targets)),
                None if options is None else rows.dump_list(sorted(set(options))),
                reason,
            ],
        )

    def _decide_request_tx(
        self,
        tx: Tx,
        request_id: int,
        state: RequestState,
        *,
        by: str | None,
        at: float,
        reason: str | None,
        expect: RequestState = RequestState.PENDING,
    ) -> AccessRequest:
        changed = tx.run(
            "UPDATE access_requests SET state = ?, decided_at = ?, decided_by = ?,"
            " decision_reason = ? WHERE id = ? AND state = ?",
            [RequestState(state).value, float(at), by, reason, request_id, expect.value],
        )
        found = self._request_tx(tx, request_id)
        if changed == 0:
            raise StoreError(f"request #{request_id} is {found.state.value}, not {expect.value}")
        return found

    def _review_request_tx(
        self, tx: Tx, request_id: int, by: str, at: float, note: str
    ) -> AccessRequest:
        changed = tx.run(
            "UPDATE access_requests SET reviewed_at = ?, reviewed_by = ?, review_note = ?"
            " WHERE id = ? AND kind = ? AND reviewed_at IS NULL",
            [float(at), by, note, request_id, RequestKind.BREAK_GLASS.value],
        )
        found = self._request_tx(tx, request_id)
        if changed == 0:
            raise StoreError(f"request #{request_id} is not a break-glass request awaiting review")
        return found

    def due_lapses(self, now: float) -> list[int]:
        """Ids of pending requests whose time to be decided has passed."""
        with self._db.transaction() as tx:
            return [
                int(r["id"])
                for r in tx.all(
                    "SELECT id FROM access_requests WHERE state = ? AND lapses_at <= ? ORDER BY id",
                    [RequestState.PENDING.value, float(now)],
                )
            ]

    def _link_grant_tx(self, tx: Tx, grant_id: int, request_id: int) -> None:
        tx.run("UPDATE grants SET request_id = ? WHERE id = ?", [request_id, grant_id])

    def start_grant_clock(self, grant_id: int, now: float, duration: float) -> bool:
        """On a grant's first session: end it at ``now + duration`` if that is earlier.

        True if the grant changed; a grant already used keeps its end.
        """
        with self._db.transaction(write=True) as tx:
            changed = tx.run(
                "UPDATE grants SET not_after = ? WHERE id = ? AND not_after > ?"
                " AND NOT EXISTS (SELECT 1 FROM sessions WHERE grant_id = ?)",
                [float(now + duration), grant_id, float(now + duration), grant_id],
            )
        return changed > 0

    def _extend_grant_tx(self, tx: Tx, grant_id: int, not_after: float) -> None:
        changed = tx.run(
            "UPDATE grants SET not_after = ? WHERE id = ? AND state = ? AND not_after < ?",
            [float(not_after), grant_id, GrantState.ACTIVE.value, float(not_after)],
        )
        if changed == 0:
            raise StoreError(f"grant #{grant_id} is not active or already ends later")

    # ----------------------------------------------------------------- groups and policy

    def user_groups(self, user_id: int) -> tuple[str, ...]:
        """The groups a user belongs to, sorted."""
        with self._db.transaction() as tx:
            return self._user_groups_tx(tx, user_id)

    def _user_groups_tx(self, tx: Tx, user_id: int) -> tuple[str, ...]:
        return tuple(
            r["name"]
            for r in tx.all(
                "SELECT name FROM user_groups WHERE user_id = ? ORDER BY name", [user_id]
            )
        )

    def set_user_groups(self, user_id: int, groups: Iterable[str]) -> None:
        """Replace a user's groups."""
        with self._db.transaction(write=True) as tx:
            self._set_user_groups_tx(tx, user_id, groups)

    def _set_user_groups_tx(self, tx: Tx, user_id: int, groups: Iterable[str]) -> None:
        tx.run("DELETE FROM user_groups WHERE user_id = ?", [user_id])
        for g in sorted(set(groups)):
            tx.run("INSERT INTO user_groups (user_id, name) VALUES (?, ?)", [user_id, g])

    def group_members(self, group: str) -> tuple[str, ...]:
        """Names of the users in a group."""
        with self._db.transaction() as tx:
            return tuple(
                r["name"]
                for r in tx.all(
                    "SELECT u.name FROM user_groups g JOIN users u ON u.id = g.user_id"
                    " WHERE g.name = ? ORDER BY u.name",
                    [group],
                )
            )

    def set_target_request_policy(
        self,
        name: str,
        *,
        approvals: int | None,
        approvers: Sequence[str] | None,
        max_request: float | None,
    ) -> None:
        """Set a target's request policy (None leaves that part as it is)."""
        with self._db.transaction(write=True) as tx:
            self._set_target_request_policy_tx(
                tx, name, approvals=approvals, approvers=approvers, max_request=max_request
            )

    def _set_target_request_policy_tx(
        self,
        tx: Tx,
        name: str,
        *,
        approvals: int | None,
        approvers: Sequence[str] | None,
        max_request: float | None,
    ) -> None:
        sets: list[str] = []
        params: list[Any] = []
        if approvals is not None:
            if approvals < 1:
                raise StoreError("a target needs at least 1 approval")
            sets.append("approvals = ?")
            params.append(int(approvals))
        if approvers is not None:
            sets.append("approvers = ?")
            params.append(rows.dump_list(list(approvers)) if approvers else None)
        if max_request is not None:
            sets.append("max_request = ?")
            params.append(float(max_request))
        if not sets:
            return
        changed = tx.run(
            f"UPDATE targets SET {', '.join(sets)} WHERE name = ? AND removed_at IS NULL",  # noqa: S608  fixed column names
            [*params, name],
        )
        if changed == 0:
            raise NotFound(f"no target named '{name}'; see 'bastion target list'")
