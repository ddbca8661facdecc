"""Admission: may this user reach this target now, under which grant, as which login?

The one place that fetches a target, reads the user's grants for it and picks the
grant (``bastion.grants``), for every protocol and every kind of session: SSH
shells, exec, file transfer, port and agent forwarding, PostgreSQL logins and
database tokens. A refusal names what is missing, in words the contractor can
act on, with a ``RefusalReason`` for the audit row. Blocking (store calls): run
it in a worker thread from the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.engagements import refusal as engagement_refusal
from bastion.errors import AccessDenied, BastionError
from bastion.grants import authorize, authorize_database, require_option
from bastion.mfa import locked_message
from bastion.session.reasons import RefusalReason
from bastion.store import Store
from bastion.store.models import Credset, Grant, Target, TargetKind, User


class Refused(BastionError):
    """The session is refused; the message is for the contractor, the reason for the audit."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Access:
    """What admission found: the target, the grant that lets the user in, and the login.

    ``login`` is the SSH login (None only where none is configured) or the
    PostgreSQL credential set's name.
    """

    target: Target
    grant: Grant
    login: str | None


def login_refusal(user: User, now: float) -> tuple[str, str] | None:
    """Why ``user`` may not log in over SSH at all now: (audit reason, words), or None.

    The first check of every SSH login (after the key, before the TOTP code), and
    what ``bastion access`` reports, so the two cannot disagree. In order: the
    engagement ended, disabled, locked, no TOTP enrolment.
    """
    ended = engagement_refusal(user, now)
    if ended is not None:
        return "engagement-ended", ended
    if user.disabled:
        return "disabled", f"user {user.name} is disabled; ask an admin"
    if user.locked_until is not None and user.locked_until > now:
        return "locked", locked_message(user.name, user.locked_until, now)
    if not user.totp_secret:
        return "no-mfa", (
            f"user {user.name} has no TOTP enrolment; ask an admin to run "
            f"'bastion user reset-mfa {user.name}'"
        )
    return None


def _target(store: Store, user: User, name: str, protocol: str) -> Target:
    target = store.get_target(name)
    if protocol == "postgres":
        if target is None or target.kind != TargetKind.POSTGRES:
            raise Refused(RefusalReason.NO_TARGET, f"no database target named '{name}'")
        return target
    if target is None:
        raise Refused(RefusalReason.NO_GRANT, f"no grant for {name}")
    if target.kind == TargetKind.POSTGRES:
        raise Refused(
            "postgres-target",
            f"{target.name} is a PostgreSQL target, not an SSH host: get a database token "
            f"with 'ssh {user.name}@BASTION db-token {target.name}' and connect with psql",
        )
    return target


def find_access(
    store: Store,
    *,
    user: User,
    target_name: str,
    protocol: str,
    now: float,
    login: str | None = None,
    options: Sequence[str] = (),
) -> Access:
    """Pick the grant for ``user`` on ``target_name`` at ``now`` (raises Refused).

    ``protocol`` is "ssh" or "postgres"; ``login`` is the SSH login asked for, or
    the credential set for PostgreSQL (None: the one the grant names);
    ``options`` are grant options of which at least one is needed (e.g. "sftp").
    """
    target = _target(store, user, target_name, protocol)
    grants = store.list_grants(user_id=user.id, target_id=target.id)
    try:
        if protocol == "postgres":
            grant = authorize_database(grants, target.name, login, now)
            chosen: str | None = login or grant.credset
        else:
            grant = authorize(grants, target.name, login, now, target.default_login)
            chosen = login or grant.login or target.default_login
    except AccessDenied as e:
        raise Refused(RefusalReason.NO_GRANT, str(e)) from e
    if options:
        try:
            require_option(grant, *options)
        except AccessDenied as e:
            raise Refused(RefusalReason.OPTION_NOT_GRANTED, str(e)) from e
    return Access(target=target, grant=grant, login=chosen)


def credset_of(target: Target, name: str | None) -> Credset:
    """The credential set ``name`` of a database target (raises Refused naming the choices)."""
    found = next((c for c in target.credsets if c.name == name), None)
    if found is None:
        have = ", ".join(c.name for c in target.credsets) or "none"
        raise Refused(
            RefusalReason.NO_CREDSET,
            f"target {target.name} has no credential set '{name}' (it has: {have})",
        )
    return found
