"""Database tokens: the password a contractor gives the PostgreSQL listener.

A contractor proves who they are over SSH (public key + TOTP) and asks for a
token with ``ssh BASTION db-token TARGET [CREDSET]``. The token is 256 random
bits, shown once, stored only as its SHA-256 hash, bound to one user, one
target, one grant and one credential set, and expires at the earlier of the
configured lifetime and the grant's end. The proxy checks it with
``check_db_token`` and then still asks ``grants.authorize_database`` at every
connection, so revoking the grant (or locking the user) ends the token's use.

Policy only: the store is passed in, the clock is a parameter, nothing here
touches a socket.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from bastion.errors import AccessDenied, BastionError
from bastion.grants import format_time, is_usable
from bastion.session.admission import Refused, credset_of, find_access
from bastion.session.reasons import RefusalReason
from bastion.store import Store
from bastion.store.models import Grant, Target, TargetKind, TokenPurpose, TokenRecord, User

__all__ = [
    "TOKEN_PREFIX",
    "DbTokenDenied",
    "IssuedToken",
    "TokenRefused",
    "check_db_token",
    "connection_help",
    "hash_token",
    "issue_db_token",
    "issue_for_request",
    "new_token_text",
]

TOKEN_PREFIX = "bdt_"  # noqa: S105  a public prefix
"""Marks a bastion database token, so secret scanners and people recognise a leaked one."""


class TokenRefused(BastionError):
    """A presented database token is not accepted; ``message`` tells the contractor why.

    ``reason`` is a short code for audits and metrics: ``unknown``, ``other-user``,
    ``revoked``, ``expired``, ``other-target`` or ``other-credset``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DbTokenDenied(AccessDenied):
    """A token request is refused; ``reason`` is the audit code, the message says what to do.

    Codes: ``no-target``, ``not-postgres``, ``no-credset``, ``no-grant``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: the plaintext (shown once, never stored) and its record."""

    token: str
    record: TokenRecord
    grant: Grant
    limited_by_grant: bool
    """True when the grant ends before the token lifetime would: expiry = grant end."""


def new_token_text() -> str:
    """A fresh token: the prefix and 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex (fast is right for 256-bit random secrets)."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def issue_db_token(
    store: Store,
    *,
    user: User,
    target: Target,
    grant: Grant,
    credset: str,
    now: float,
    ttl: float,
    created_from: str,
) -> IssuedToken:
    """Issue a token for ``user`` on ``target`` under ``grant``, expiring within ``ttl``.

    The caller has already chosen ``grant`` (see ``issue_for_request``); this
    re-checks that it is usable now and belongs to this user, target and set.
    Raises DbTokenDenied otherwise, ValueError for a non-positive ``ttl``.
    """
    if ttl <= 0:
        raise ValueError("postgres.token_ttl must be a positive number of seconds")
    if target.kind != TargetKind.POSTGRES:
        raise DbTokenDenied("not-postgres", f"{target.name} is not a PostgreSQL target")
    if grant.user_id != user.id or grant.target_id != target.id or grant.credset != credset:
        raise DbTokenDenied(
            "no-grant",
            f"grant #{grant.id} is not for {user.name} on {target.name}/{credset}",
        )
    if not is_usable(grant, now):
        raise DbTokenDenied("no-grant", f"grant #{grant.id} is not usable now")
    expires = min(now + ttl, grant.not_after)
    token = new_token_text()
    record = store.add_token(
        purpose=TokenPurpose.DB,
        user_id=user.id,
        target_id=target.id,
        grant_id=grant.id,
        credset=credset,
        token_hash=hash_token(token),
        expires_at=expires,
        now=now,
        created_from=created_from,
    )
    return IssuedToken(token, record, grant, limited_by_grant=grant.not_after < now + ttl)


def issue_for_request(
    store: Store,
    *,
    user: User,
    target_name: str,
    credset: str | None,
    now: float,
    ttl: float,
    created_from: str,
) -> tuple[Target, IssuedToken]:
    """What ``ssh BASTION db-token TARGET [CREDSET]`` does: find target and grant, issue.

    Raises DbTokenDenied naming what is missing (no such target, an SSH target,
    an unknown credential set, no usable grant).
    """
    target = store.get_target(target_name)
    if target is not None and target.kind != TargetKind.POSTGRES:
        raise DbTokenDenied(
            "not-postgres",
            f"{target.name} is an SSH target, not a database; "
            f"connect with: ssh -t {user.name}@BASTION {target.name}",
        )
    if target is not None and credset is not None:
        try:
            credset_of(target, credset)
        except Refused as e:
            raise DbTokenDenied(e.reason, e.message) from e
    try:
        access = find_access(
            store, user=user, target_name=target_name, protocol="postgres", now=now, login=credset
        )
    except Refused as e:
        if e.reason == RefusalReason.NO_TARGET:
            raise DbTokenDenied("no-target", f"no grant for {target_name}") from e
        raise DbTokenDenied(e.reason, e.message) from e
    target, grant = access.target, access.grant
    names = [c.name for c in target.credsets]
    chosen = credset or grant.credset
    if chosen is None:
        under = f" (profile {grant.profile_name})" if grant.profile_name else ""
        raise DbTokenDenied(
            "no-credset",
            f"grant #{grant.id}{under} names no credential set and {target.name} has several "
            f"({', '.join(names)}); ask an admin for a grant or profile with --credset",
        )
    if chosen not in names:
        raise DbTokenDenied(
            "no-credset",
            f"grant #{grant.id} names credential set '{chosen}', which target {target.name} "
            "does not have; ask an admin to fix the grant",
        )
    issued = issue_db_token(
        store,
        user=user,
        target=target,
        grant=grant,
        credset=chosen,
        now=now,
        ttl=ttl,
        created_from=created_from,
    )
    return target, issued


def _get_one(target: str, credset: str | None = None) -> str:
    return f"'ssh BASTION db-token {target}{' ' + credset if credset else ''}'"


def check_db_token(
    store: Store,
    *,
    user_name: str,
    target_name: str,
    token: str,
    now: float,
    credset: str | None = None,
) -> TokenRecord:
    """The live database token record for this user and target; marks it used.

    ``credset`` (the ``TARGET/CREDSET`` form of the database name), when given,
    must be the set the token was issued for. The grant is *not* checked here:
    call ``grants.authorize_database`` too, at every connection. The lookup is
    by hash, so no secret is ever compared byte by byte.

    Raises TokenRefused with a reason code and a message the contractor can act on.
    """
    record = store.find_token(hash_token(token)) if token.startswith(TOKEN_PREFIX) else None
    if record is None or record.purpose is not TokenPurpose.DB:
        raise TokenRefused(
            "unknown",
            "this password is not a valid database token (mistyped, or from another bastion); "
            f"get one with {_get_one(target_name)}",
        )
    if record.user_name != user_name:
        raise TokenRefused(
            "other-user",
            f"this token was issued to another bastion user, not {user_name}; "
            f"get your own with {_get_one(target_name)}",
        )
    if record.revoked_at is not None:
        raise TokenRefused(
            "revoked",
            f"this token was revoked at {format_time(record.revoked_at)}"
            f" by {record.revoked_by or 'an admin'}; get a new one with {_get_one(target_name)}",
        )
    if now >= record.expires_at:
        raise TokenRefused(
            "expired",
            f"this token expired at {format_time(record.expires_at)}; "
            f"get a new one with {_get_one(target_name)}",
        )
    if record.target_name != target_name:
        raise TokenRefused(
            "other-target",
            f"this token is for target {record.target_name}, not {target_name}; "
            f"get one for {target_name} with {_get_one(target_name)}",
        )
    if credset is not None and record.credset is not None and credset != record.credset:
        raise TokenRefused(
            "other-credset",
            f"this token is for {target_name}/{record.credset}, not {target_name}/{credset}; "
            f"get one with {_get_one(target_name, credset)}",
        )
    store.touch_token(record.id, now)
    return record


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"


def connection_help(
    issued: IssuedToken, *, target: Target, user: str, host: str, port: int, ttl: float
) -> str:
    """The text ``db-token`` prints: the token, its expiry and lines ready to paste."""
    record = issued.record
    several = len(target.credsets) > 1
    dbname = f"{target.name}/{record.credset}" if several and record.credset else target.name
    why = (
        f"grant #{issued.grant.id} ends then"
        if issued.limited_by_grant
        else f"{_duration(ttl)} token lifetime"
    )
    conninfo = f"host={host} port={port} user={user} dbname={dbname} sslmode=require"
    uri = f"postgresql://{quote(user)}@{host}:{port}/{quote(dbname, safe='')}?sslmode=require"
    return (
        f"token: {issued.token}\n"
        f"expires: {format_time(record.expires_at)} ({why})\n"
        f"target: {target.name}  credential set: {record.credset}  token id: #{record.id}\n"
        "\n"
        f'psql "{conninfo}"   (password: the token)\n'
        f'PGPASSWORD={issued.token} psql "{conninfo}"\n'
        f"{uri}   (user {user}, password: the token)\n"
    )
