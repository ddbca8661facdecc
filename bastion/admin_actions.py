"""Admin actions: one function each, the same whether the CLI or the control API asks.

Each function changes state and appends its audit row in one store transaction
(``Store.audited_change``): an action that happened is always audited, and an
audit row always means the action happened. The row names the acting name and
where the request came from (``Origin``): the CLI with the local uid and login,
or the control API with the admin's bastion name and the node that served it.

The functions are synchronous like the store; the control server runs them
through ``BastionNode.call``. Putting the ended sessions into effect on this node
at once (``LiveSessions.apply_terminations``) stays with the caller.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bastion import audit_actions as actions
from bastion.store import Store
from bastion.store.audited import AuditedChange
from bastion.store.models import Grant, Target

UNTIL_UNLOCKED = 10 * 365 * 86400.0
"""How long a lock without a duration lasts: in effect until an admin unlocks."""


def cli_actor() -> str:
    """The CLI's acting name: $BASTION_ACTOR, else ``cli:LOGIN``."""
    return os.environ.get("BASTION_ACTOR") or f"cli:{getpass.getuser()}"


@dataclass(frozen=True)
class Origin:
    """Who acts, and through which door; ``details`` go into every audit row."""

    actor: str
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def cli(cls) -> Origin:
        """The local account running the CLI ($BASTION_ACTOR renames the actor, not the uid)."""
        return cls(
            cli_actor(),
            MappingProxyType({"via": "cli", "uid": os.getuid(), "login": getpass.getuser()}),
        )

    @classmethod
    def control(cls, admin: str, node: str) -> Origin:
        """An admin authenticated by the control API of ``node``."""
        return cls(admin, MappingProxyType({"via": "control", "admin": admin, "node": node}))


@dataclass(frozen=True)
class Locked:
    """What ``lock_user`` did."""

    user: str
    until: float
    sessions: tuple[str, ...]
    """Live sessions asked to end (by whichever node runs them)."""
    tokens_revoked: int
    message: str
    """What those sessions' contractors are told."""


def terminate_session(
    store: Store, origin: Origin, session_id: str, reason: str, now: float
) -> None:
    """Ask whichever node runs a live session to end it; audits ``session.terminate-requested``.

    Raises NotFound, or StoreError if the session already ended.
    """
    with store.audited_change(
        origin.actor, actions.SESSION_TERMINATE_REQUESTED, session_id, now
    ) as c:
        c.request_termination(session_id, origin.actor, reason, now)
        c.details.update(origin.details, reason=reason)


def lock_user(
    store: Store, origin: Origin, name: str, until: float, reason: str | None, now: float
) -> Locked:
    """Refuse a user's logins until ``until``, end their live sessions, revoke their tokens.

    Audits ``user.lock``. Raises NotFound.
    """
    message = f"user {name} locked: {reason}" if reason else f"user {name} locked"
    with store.audited_change(origin.actor, actions.USER_LOCK, name, now) as c:
        user = c.user(name)
        c.lock_user(user.id, until)
        sessions = c.request_user_terminations(user.id, origin.actor, message, now)
        revoked = c.revoke_user_tokens(user.id, origin.actor, now)
        c.details.update(origin.details, until=until, sessions=sessions, tokens_revoked=revoked)
        if reason:
            c.details["reason"] = reason
    return Locked(name, until, tuple(sessions), revoked, message)


def unlock_user(store: Store, origin: Origin, name: str, now: float) -> None:
    """Lift a lock (an admin's or an MFA lockout) and forget failed logins.

    Audits ``user.unlock``. Raises NotFound.
    """
    with store.audited_change(origin.actor, actions.USER_UNLOCK, name, now) as c:
        user = c.user(name)
        c.lock_user(user.id, None)
        c.clear_auth_failures(user.id)
        c.details.update(origin.details)


def revoke_grant(store: Store, origin: Origin, grant_id: int, now: float) -> Grant:
    """End a grant now (its live sessions end within a poll, its tokens stop working).

    Audits ``grant.revoke``. Raises NotFound, or StoreError if it was already revoked.
    """
    with store.audited_change(origin.actor, actions.GRANT_REVOKE, f"grant #{grant_id}", now) as c:
        grant = c.revoke_grant(grant_id, origin.actor, now)
        c.details.update(origin.details, user=grant.user_name, target=grant.target_name)
    return grant


def set_user_groups(
    store: Store,
    origin: Origin,
    name: str,
    *,
    groups: Iterable[str] | None = None,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    now: float,
) -> tuple[str, ...]:
    """Replace a user's groups (``groups``), or add and remove some; returns them now.

    Groups name approvers (``@sre`` in a target's approvers) and match auto-approve
    rules. Audits ``user.set-groups``. Raises NotFound.
    """
    with store.audited_change(origin.actor, actions.USER_SET_GROUPS, name, now) as c:
        user = c.user(name)
        before = c.user_groups(user.id)
        after = set(before if groups is None else groups)
        after = (after | set(add)) - set(remove)
        c.set_user_groups(user.id, after)
        c.details.update(origin.details, groups=sorted(after), before=list(before))
    return tuple(sorted(after))


def set_target_policy(
    store: Store,
    origin: Origin,
    name: str,
    *,
    approvals: int | None = None,
    approvers: Sequence[str] | None = None,
    max_request: float | None = None,
    now: float,
) -> Target:
    """Set a target's request policy (None leaves a part as it is); returns the target.

    Audits ``target.set-policy``. Raises NotFound, or StoreError for 0 approvals.
    """
    with store.audited_change(origin.actor, actions.TARGET_SET_POLICY, name, now) as c:
        target = c.set_target_request_policy(
            name, approvals=approvals, approvers=approvers, max_request=max_request
        )
        c.details.update(
            origin.details,
            approvals=target.approvals,
            approvers=list(target.approvers),
            max_request=target.max_request,
        )
    return target


@dataclass(frozen=True)
class Disabled:
    """What ``disable_user`` did."""

    user: str
    sessions: tuple[str, ...]
    """Live sessions asked to end (by whichever node runs them)."""
    tokens_revoked: int
    requests_dropped: tuple[int, ...]


def disable_user_in(
    c: AuditedChange, origin: Origin, name: str, reason: str | None, now: float
) -> Disabled:
    """``disable_user`` inside a caller's audited change (``bastion apply`` batches them)."""
    message = f"user {name} disabled: {reason}" if reason else f"user {name} disabled"
    user = c.set_user_disabled(name, True)
    sessions = c.request_user_terminations(user.id, origin.actor, message, now)
    revoked = c.revoke_user_tokens(user.id, origin.actor, now)
    dropped = c.drop_user_requests(user.id, now, message)
    c.details.update(
        origin.details, sessions=sessions, tokens_revoked=revoked, requests_dropped=dropped
    )
    if reason:
        c.details["reason"] = reason
    return Disabled(name, tuple(sessions), revoked, tuple(dropped))


def disable_user(
    store: Store, origin: Origin, name: str, reason: str | None, now: float
) -> Disabled:
    """Refuse all of a user's logins, end their live sessions, revoke tokens and requests.

    Nothing is deleted: the user, their sessions and audit rows stay (``bastion
    user enable`` re-enables). Audits ``user.disable``. Raises NotFound.
    """
    with store.audited_change(origin.actor, actions.USER_DISABLE, name, now) as c:
        return disable_user_in(c, origin, name, reason, now)
