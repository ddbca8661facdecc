"""The state store: users, targets, grants, sessions, certificates and audit.

One class, one SQL text per query, on SQLite or PostgreSQL (see ``backends``).
Every method is synchronous, thread-safe and runs in its own transaction; the
SSH server calls them through ``asyncio.to_thread``. Times are POSIX seconds
supplied by the caller so tests control the clock. Secrets are sealed with the
SecretBox before they reach the database and opened on the way out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from bastion.errors import AlreadyExists, NotFound, StoreError
from bastion.secretbox import SecretBox
from bastion.store import rows
from bastion.store.address_blocks import AddressBlocks
from bastion.store.audited import AuditedChange
from bastion.store.backends import Backend, Tx, connect
from bastion.store.engagements import Engagements
from bastion.store.history import History, where_clause
from bastion.store.migrations import migrate, schema_version
from bastion.store.models import (
    TLS_MODES,
    Credset,
    Grant,
    GrantState,
    Role,
    Target,
    TargetKind,
    User,
)
from bastion.store.nodes import Nodes
from bastion.store.policy import Policies
from bastion.store.profiles import Profiles
from bastion.store.requests import Requests
from bastion.store.search import SearchIndex
from bastion.store.tokens import Tokens
from bastion.store.wakeups import WAKE_CHANNEL, WakeKind, Wakeup

_IN_CHUNK = 500
_LIVE_GRANT_STATES = (GrantState.ACTIVE.value, GrantState.PENDING.value)


def _no_user(name: str) -> NotFound:
    return NotFound(f"no user named '{name}'; see 'bastion user list'")


def _no_user_id(user_id: int) -> NotFound:
    return NotFound(f"no user with id {user_id}; see 'bastion user list'")


def _no_target(name: str) -> NotFound:
    return NotFound(f"no target named '{name}'; see 'bastion target list'")


def _no_grant(grant_id: int) -> NotFound:
    return NotFound(f"no grant #{grant_id}; see 'bastion grant list'")


def _key_body(key_line: str) -> str:
    """An OpenSSH public key without its comment, for duplicate detection."""
    return " ".join(key_line.split()[:2])


# SQL here is built only from fixed text: the column lists in rows.py, conditions
# written in this file and "?" marks; every value is a parameter ("noqa: S608" below).
class Store(
    History, Tokens, Requests, Policies, Engagements, Profiles, Nodes, AddressBlocks, SearchIndex
):
    """Persistent state shared by every bastion node."""

    def __init__(self, backend: Backend, box: SecretBox) -> None:
        self._db = backend
        self._box = box
        self.backend: str = backend.name

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        """Bring the schema to the latest version; safe to run on several nodes at once."""
        return migrate(self._db, time.time())

    def schema_version(self) -> int:
        """The applied schema version (0 before the first migration)."""
        return schema_version(self._db)

    def close(self) -> None:
        """Release the database connection; idempotent."""
        self._db.close()

    def ping(self) -> None:
        """One round trip to the database; raises StoreUnavailable if it cannot be reached."""
        with self._db.transaction() as tx:
            tx.one("SELECT 1 AS one")

    @property
    def unavailable(self) -> str | None:
        """Why the database is unreachable (the last error), or None while it answers."""
        return self._db.unavailable

    @property
    def down_since(self) -> float | None:
        """When the database was first found unreachable, or None while it answers."""
        return self._db.down_since

    # ------------------------------------------------------------------- users

    def _user_row(self, tx: Tx, where: Literal["name", "id"], param: Any) -> User | None:
        row = tx.one(f"SELECT {rows.USER_COLUMNS} FROM users WHERE {where} = ?", [param])  # noqa: S608  fixed SQL, ? values
        return None if row is None else rows.user(row, self._box)

    def _require_user(self, tx: Tx, name: str) -> User:
        found = self._user_row(tx, "name", name)
        if found is None:
            raise _no_user(name)
        return found

    def _require_user_id(self, tx: Tx, user_id: int) -> None:
        if tx.one("SELECT id FROM users WHERE id = ?", [user_id]) is None:
            raise _no_user_id(user_id)

    def add_user(
        self,
        name: str,
        role: Role,
        ssh_keys: Sequence[str],
        totp_secret: str | None,
        now: float,
    ) -> User:
        """Create a user. Raises AlreadyExists if the name is taken."""
        if not name:
            raise StoreError("a user needs a name")
        try:  # the UNIQUE constraint decides, so two nodes cannot both create the name
            with self._db.transaction(write=True) as tx:
                return self._add_user_tx(tx, name, role, ssh_keys, totp_secret, now)
        except AlreadyExists as e:
            raise AlreadyExists(f"user '{name}' already exists; see 'bastion user list'") from e

    def _add_user_tx(
        self,
        tx: Tx,
        name: str,
        role: Role,
        ssh_keys: Sequence[str],
        totp_secret: str | None,
        now: float,
    ) -> User:
        keys = [k.strip() for k in ssh_keys if k.strip()]
        tx.run(
            "INSERT INTO users (name, role, ssh_keys, totp_secret, disabled, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                name,
                Role(role).value,
                rows.dump_list(keys),
                rows.seal(self._box, totp_secret, rows.totp_context(name)),
                False,
                float(now),
            ],
        )
        return self._require_user(tx, name)

    def get_user(self, name: str) -> User | None:
        """The user with this name, or None."""
        with self._db.transaction() as tx:
            return self._user_row(tx, "name", name)

    def get_user_by_id(self, user_id: int) -> User | None:
        """The user with this id, or None."""
        with self._db.transaction() as tx:
            return self._user_row(tx, "id", user_id)

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with self._db.transaction() as tx:
            found = tx.all(f"SELECT {rows.USER_COLUMNS} FROM users ORDER BY name")  # noqa: S608  fixed SQL, ? values
        return [rows.user(r, self._box) for r in found]

    def set_user_disabled(self, name: str, disabled: bool) -> User:
        """Disable (or re-enable) a user. Raises NotFound."""
        with self._db.transaction(write=True) as tx:
            return self._set_user_disabled_tx(tx, name, disabled)

    def _set_user_disabled_tx(self, tx: Tx, name: str, disabled: bool) -> User:
        if tx.run("UPDATE users SET disabled = ? WHERE name = ?", [disabled, name]) == 0:
            raise _no_user(name)
        return self._require_user(tx, name)

    def reset_totp(self, name: str, secret: str) -> User:
        """Enrol a new TOTP secret; forget the replay guard, failures and lock. Raises NotFound."""
        with self._db.transaction(write=True) as tx:
            user = self._require_user(tx, name)
            tx.run(
                "UPDATE users SET totp_secret = ?, totp_last_step = NULL, locked_until = NULL"
                " WHERE id = ?",
                [rows.seal(self._box, secret, rows.totp_context(name)), user.id],
            )
            tx.run("DELETE FROM auth_failures WHERE user_id = ?", [user.id])
            return self._require_user(tx, name)

    def add_user_key(self, name: str, key_line: str) -> User:
        """Authorise one more SSH public key. Raises NotFound, or AlreadyExists for a known key."""
        key_line = key_line.strip()
        if not key_line:
            raise StoreError("the SSH public key is empty")
        with self._db.transaction(write=True) as tx:
            # Re-read under the write lock (SQLite) / row lock (PostgreSQL) so two
            # admins adding keys at once do not lose one.
            tx.run("UPDATE users SET ssh_keys = ssh_keys WHERE name = ?", [name])
            user = self._require_user(tx, name)
            if _key_body(key_line) in {_key_body(k) for k in user.ssh_keys}:
                raise AlreadyExists(f"user '{name}' already has that SSH key")
            keys = rows.dump_list([*user.ssh_keys, key_line])
            tx.run("UPDATE users SET ssh_keys = ? WHERE id = ?", [keys, user.id])
            return self._require_user(tx, name)

    def accept_totp_step(self, user_id: int, step: int) -> bool:
        """Record ``step`` as used if it is newer than the last one; False means replay.

        One conditional UPDATE, so concurrent logins on any node cannot both win.
        """
        with self._db.transaction(write=True) as tx:
            changed = tx.run(
                "UPDATE users SET totp_last_step = ?"
                " WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
                [step, user_id, step],
            )
        return changed == 1

    def record_auth_failure(self, user_id: int, at: float, reason: str) -> None:
        """Remember a failed login attempt (for lockout). Raises NotFound."""
        with self._db.transaction(write=True) as tx:
            self._require_user_id(tx, user_id)
            tx.run(
                "INSERT INTO auth_failures (user_id, at, reason) VALUES (?, ?, ?)",
                [user_id, float(at), reason],
            )

    def count_auth_failures(self, user_id: int, since: float) -> int:
        """Failed attempts at or after ``since`` (not yet cleared)."""
        with self._db.transaction() as tx:
            row = tx.one(
                "SELECT COUNT(*) AS n FROM auth_failures WHERE user_id = ? AND at >= ?",
                [user_id, float(since)],
            )
        return int(row["n"]) if row else 0

    def clear_auth_failures(self, user_id: int) -> None:
        """Forget failed attempts after a successful login."""
        with self._db.transaction(write=True) as tx:
            self._clear_auth_failures_tx(tx, user_id)

    def _clear_auth_failures_tx(self, tx: Tx, user_id: int) -> None:
        tx.run("DELETE FROM auth_failures WHERE user_id = ?", [user_id])

    def lock_user(self, user_id: int, until: float | None) -> None:
        """Refuse logins until ``until`` (None unlocks). Raises NotFound."""
        with self._db.transaction(write=True) as tx:
            self._lock_user_tx(tx, user_id, until)

    def _lock_user_tx(self, tx: Tx, user_id: int, until: float | None) -> None:
        lock = None if until is None else float(until)
        if tx.run("UPDATE users SET locked_until = ? WHERE id = ?", [lock, user_id]) == 0:
            raise _no_user_id(user_id)

    # ----------------------------------------------------------------- targets

    def _targets(self, tx: Tx, where: str, params: Sequence[Any]) -> list[Target]:
        found = tx.all(f"SELECT {rows.TARGET_COLUMNS} FROM targets WHERE {where}", params)  # noqa: S608  fixed SQL, ? values
        if not found:
            return []
        by_id: dict[int, list[Credset]] = {int(r["id"]): [] for r in found}
        names = {int(r["id"]): str(r["name"]) for r in found}
        ids = list(by_id)
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            for c in tx.all(
                "SELECT target_id, name, db_user, password FROM credsets"  # noqa: S608  fixed SQL, ? values
                f" WHERE target_id IN ({marks}) ORDER BY id",
                chunk,
            ):
                tid = int(c["target_id"])
                by_id[tid].append(rows.credset(c, names[tid], self._box))
        labels = self._labels_of(tx, ids)
        return [rows.target(r, by_id[int(r["id"])], labels.get(int(r["id"]))) for r in found]

    def _live_target(self, tx: Tx, name: str) -> Target:
        found = self._targets(tx, "name = ? AND removed_at IS NULL", [name])
        if not found:
            raise _no_target(name)
        return found[0]

    def add_target(
        self,
        *,
        name: str,
        kind: TargetKind,
        host: str,
        port: int,
        logins: Sequence[str],
        principal: str,
        host_keys: Sequence[str] = (),
        host_ca_keys: Sequence[str] = (),
        database: str | None = None,
        credsets: Sequence[Credset] = (),
        tls_mode: str = "prefer",
        tls_ca: str | None = None,
        labels: Mapping[str, str] | None = None,
        now: float,
    ) -> Target:
        """Register a host or database. Raises AlreadyExists if a live target has the name."""
        _check_new_target(name, tls_mode, port, credsets)
        taken = f"target '{name}' already exists; see 'bastion target list'"
        try:  # the partial unique index on live names decides
            with self._db.transaction(write=True) as tx:
                return self._add_target_tx(
                    tx, name=name, kind=kind, host=host, port=port, logins=logins,
                    principal=principal, host_keys=host_keys, host_ca_keys=host_ca_keys,
                    database=database, credsets=credsets, tls_mode=tls_mode, tls_ca=tls_ca,
                    labels=labels, now=now,
                )  # fmt: skip
        except AlreadyExists as e:
            raise AlreadyExists(taken) from e

    def _add_target_tx(
        self,
        tx: Tx,
        *,
        name: str,
        kind: TargetKind,
        host: str,
        port: int,
        logins: Sequence[str],
        principal: str,
        host_keys: Sequence[str] = (),
        host_ca_keys: Sequence[str] = (),
        database: str | None = None,
        credsets: Sequence[Credset] = (),
        tls_mode: str = "prefer",
        tls_ca: str | None = None,
        labels: Mapping[str, str] | None = None,
        now: float,
    ) -> Target:
        _check_new_target(name, tls_mode, port, credsets)
        target_id = tx.insert(
            "INSERT INTO targets (name, kind, host, port, logins, principal, host_keys,"
            " host_ca_keys, dbname, created_at, tls_mode, tls_ca)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                name,
                TargetKind(kind).value,
                host,
                int(port),
                rows.dump_list(logins),
                principal,
                rows.dump_list(host_keys),
                rows.dump_list(host_ca_keys),
                database,
                float(now),
                tls_mode,
                tls_ca,
            ],
        )
        for c in credsets:
            tx.run(
                "INSERT INTO credsets (target_id, name, db_user, password) VALUES (?, ?, ?, ?)",
                [
                    target_id,
                    c.name,
                    c.user,
                    rows.seal(self._box, c.password, rows.credset_context(name, c.name)),
                ],
            )
        self._set_labels_tx(tx, target_id, labels or {}, ())
        return self._targets(tx, "id = ?", [target_id])[0]

    def get_target(self, name: str) -> Target | None:
        """The live target with this name, or None."""
        with self._db.transaction() as tx:
            found = self._targets(tx, "name = ? AND removed_at IS NULL", [name])
        return found[0] if found else None

    def get_target_by_id(self, target_id: int) -> Target | None:
        """The target with this id, including removed ones (for history), or None."""
        with self._db.transaction() as tx:
            found = self._targets(tx, "id = ?", [target_id])
        return found[0] if found else None

    def list_targets(self, all: bool = False) -> list[Target]:  # noqa: A002  the CLI's --all
        """Every live target, by name (``all``: removed ones too, by name then id)."""
        where = "1 = 1" if all else "removed_at IS NULL"
        with self._db.transaction() as tx:
            return self._targets(tx, f"{where} ORDER BY name, id", [])

    def remove_target(self, name: str, at: float) -> Target:
        """Retire a target; revoke its active and pending grants and its tokens. Raises NotFound.

        The row stays for history; the name becomes free for a new target.
        """
        with self._db.transaction(write=True) as tx:
            return self._remove_target_tx(tx, name, at)

    def _remove_target_tx(self, tx: Tx, name: str, at: float) -> Target:
        target = self._live_target(tx, name)
        tx.run("UPDATE targets SET removed_at = ? WHERE id = ?", [float(at), target.id])
        tx.run(
            "UPDATE grants SET state = ?, revoked_at = ?, revoked_by = ?"
            " WHERE target_id = ? AND state IN (?, ?)",
            [
                GrantState.REVOKED.value,
                float(at),
                "target-removed",
                target.id,
                *_LIVE_GRANT_STATES,
            ],
        )
        tx.run(
            "UPDATE tokens SET revoked_at = ?, revoked_by = ?"
            " WHERE target_id = ? AND revoked_at IS NULL",
            [float(at), "target-removed", target.id],
        )
        return dataclasses.replace(target, removed_at=float(at))

    def set_target_host_keys(self, name: str, host_keys: Sequence[str]) -> Target:
        """Replace a target's pinned host keys. Raises NotFound."""
        with self._db.transaction(write=True) as tx:
            target = self._live_target(tx, name)
            tx.run(
                "UPDATE targets SET host_keys = ? WHERE id = ?",
                [rows.dump_list(host_keys), target.id],
            )
            return self._targets(tx, "id = ?", [target.id])[0]

    # ------------------------------------------------------------------ grants

    def _grant(self, tx: Tx, grant_id: int) -> Grant | None:
        row = tx.one(f"{rows.GRANT_SELECT} WHERE g.id = ?", [grant_id])
        return None if row is None else rows.grant(row)

    def add_grant(
        self,
        *,
        user_id: int,
        target_id: int | None,
        login: str | None,
        credset: str | None,
        not_before: float,
        not_after: float,
        reason: str,
        requested_by: str,
        approved_by: str | None,
        options: Iterable[str],
        now: float,
        state: GrantState = GrantState.ACTIVE,
        request_id: int | None = None,
        profile_id: int | None = None,
    ) -> Grant:
        """Record a grant for one target, or (``profile_id``, no target) under a profile.

        Raises NotFound for an unknown user, a removed target or a removed profile.
        """
        with self._db.transaction(write=True) as tx:
            return self._add_grant_tx(
                tx,
                user_id=user_id,
                target_id=target_id,
                login=login,
                credset=credset,
                not_before=not_before,
                not_after=not_after,
                reason=reason,
                requested_by=requested_by,
                approved_by=approved_by,
                options=options,
                now=now,
                state=state,
                request_id=request_id,
                profile_id=profile_id,
            )

    def _add_grant_tx(
        self,
        tx: Tx,
        *,
        user_id: int,
        target_id: int | None,
        login: str | None,
        credset: str | None,
        not_before: float,
        not_after: float,
        reason: str,
        requested_by: str,
        approved_by: str | None,
        options: Iterable[str],
        now: float,
        state: GrantState = GrantState.ACTIVE,
        request_id: int | None = None,
        profile_id: int | None = None,
    ) -> Grant:
        if not not_after > not_before:
            raise StoreError("a grant must end after it starts (not_after > not_before)")
        if (target_id is None) == (profile_id is None):
            raise StoreError("a grant names either one target or one profile")
        self._require_user_id(tx, user_id)
        if target_id is not None:
            live = tx.one("SELECT removed_at FROM targets WHERE id = ?", [target_id])
            if live is None or live["removed_at"] is not None:
                raise NotFound(f"no target with id {target_id}; see 'bastion target list'")
        else:
            live = tx.one("SELECT removed_at FROM profiles WHERE id = ?", [profile_id])
            if live is None or live["removed_at"] is not None:
                raise NotFound(f"no profile with id {profile_id}; see 'bastion profile list'")
        grant_id = tx.insert(
            "INSERT INTO grants (user_id, target_id, login, credset, not_before, not_after,"
            " reason, requested_by, approved_by, state, options, created_at, request_id,"
            " profile_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                user_id,
                target_id,
                login,
                credset,
                float(not_before),
                float(not_after),
                reason,
                requested_by,
                approved_by,
                GrantState(state).value,
                rows.dump_list(sorted(set(options))),
                float(now),
                request_id,
                profile_id,
            ],
        )
        found = self._grant(tx, grant_id)
        if found is None:  # pragma: no cover - inserted just above
            raise StoreError(f"grant #{grant_id} vanished inside its own transaction")
        return found

    def get_grant(self, grant_id: int) -> Grant | None:
        """The grant with this id, or None."""
        with self._db.transaction() as tx:
            return self._grant(tx, grant_id)

    def list_grants(
        self,
        *,
        user_id: int | None = None,
        target_id: int | None = None,
        active_at: float | None = None,
        expand: bool = False,
    ) -> list[Grant]:
        """Grants by id; ``active_at`` keeps active ones with not_before <= t < not_after.

        With ``target_id``, the profile grants whose profile's selector matches that
        target's labels now come too, filled in for that target (one per login of
        the profile when the grant names none): admission sees one list. With
        ``expand``, every profile grant comes once per target it reaches now (the
        menu, ``grants``); otherwise a profile grant comes as stored, target None.
        """
        where: list[str] = []
        params: list[Any] = []
        if user_id is not None:
            where.append("g.user_id = ?")
            params.append(user_id)
        if active_at is not None:
            where.append("g.state = ? AND g.not_before <= ? AND g.not_after > ?")
            params += [GrantState.ACTIVE.value, float(active_at), float(active_at)]
        with self._db.transaction() as tx:
            if target_id is None and not expand:
                sql = rows.GRANT_SELECT + where_clause(where) + " ORDER BY g.id"
                return [rows.grant(r) for r in tx.all(sql, params)]
            fixed = [
                *where,
                "g.target_id = ?" if target_id is not None else "g.target_id IS NOT NULL",
            ]
            sql = rows.GRANT_SELECT + where_clause(fixed) + " ORDER BY g.id"
            found = [
                rows.grant(r)
                for r in tx.all(sql, [*params, *([target_id] if target_id is not None else [])])
            ]
            sql = rows.GRANT_SELECT + where_clause([*where, "g.profile_id IS NOT NULL"])
            under = [rows.grant(r) for r in tx.all(sql + " ORDER BY g.id", params)]
            if under:
                target = None
                if target_id is not None:
                    live = self._targets(tx, "id = ? AND removed_at IS NULL", [target_id])
                    if not live:
                        return found
                    target = live[0]
                found += self._expand_tx(tx, under, target)
        return sorted(found, key=lambda g: (g.id, g.target_name or "", g.login or ""))

    def revoke_grant(self, grant_id: int, by: str, at: float) -> Grant:
        """End a grant now. Raises NotFound, or StoreError if it was already revoked."""
        with self._db.transaction(write=True) as tx:
            return self._revoke_grant_tx(tx, grant_id, by, at)

    def _revoke_grant_tx(self, tx: Tx, grant_id: int, by: str, at: float) -> Grant:
        changed = tx.run(
            "UPDATE grants SET state = ?, revoked_at = ?, revoked_by = ?"
            " WHERE id = ? AND state <> ?",
            [GrantState.REVOKED.value, float(at), by, grant_id, GrantState.REVOKED.value],
        )
        found = self._grant(tx, grant_id)
        if found is None:
            raise _no_grant(grant_id)
        if changed == 0:
            raise StoreError(f"grant #{grant_id} is already revoked")
        tx.notify(WAKE_CHANNEL, Wakeup(WakeKind.GRANT, str(grant_id)).payload())
        return found

    # ------------------------------------------------------------ audited changes

    @contextmanager
    def audited_change(
        self, actor: str, action: str, subject: str | None, at: float
    ) -> Iterator[AuditedChange]:
        """One write transaction for an admin action and its audit row: both or neither.

        The body changes state through the yielded ``AuditedChange`` and fills its
        ``details``; the audit row is appended last, in the same transaction.
        """
        with self._db.transaction(write=True) as tx:
            change = AuditedChange(self, tx)
            yield change
            subject = change.subject if change.subject is not None else subject
            change.event = self._append_audit_tx(tx, actor, action, subject, change.details, at)

    def grant_states(self, grant_ids: Sequence[int]) -> dict[int, tuple[GrantState, float]]:
        """Stored state and not_after of each known grant, for the live-session watcher."""
        result: dict[int, tuple[GrantState, float]] = {}
        ids = sorted({int(i) for i in grant_ids})
        if not ids:
            return result
        with self._db.transaction() as tx:
            for chunk in _chunks(ids):
                marks = ", ".join("?" * len(chunk))
                for r in tx.all(
                    f"SELECT id, state, not_after FROM grants WHERE id IN ({marks})",  # noqa: S608  fixed SQL, ? values
                    chunk,
                ):
                    result[int(r["id"])] = (GrantState(r["state"]), float(r["not_after"]))
        return result


def _check_new_target(name: str, tls_mode: str, port: int, credsets: Sequence[Credset]) -> None:
    """Refuse a new target's fields before any row is written (StoreError, AlreadyExists)."""
    if not name:
        raise StoreError("a target needs a name")
    if tls_mode not in TLS_MODES:
        raise StoreError(f"unknown TLS mode '{tls_mode}'; choose from {', '.join(TLS_MODES)}")
    if not 0 < port < 65536:
        raise StoreError(f"target port {port} is out of range (1-65535)")
    seen: set[str] = set()
    for c in credsets:
        if c.name in seen:
            raise AlreadyExists(f"credential set '{c.name}' is listed twice for '{name}'")
        seen.add(c.name)


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _IN_CHUNK):
        yield list(ids[i : i + _IN_CHUNK])


def open_store(url: str, box: SecretBox) -> Store:
    """Open the state store at ``url`` and migrate it to the current schema.

    ``url`` is ``sqlite:///abs/path.db``, a plain path (SQLite) or
    ``postgresql://...``. Raises StoreError if it cannot be opened or migrated.
    """
    store = Store(connect(url), box)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
