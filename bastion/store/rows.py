"""Conversions between database rows and the records in ``models``.

Lists (keys, logins, options, principals) are stored as JSON text so both
backends share one column type; secrets are sealed with the SecretBox, bound to
what they belong to so a sealed value cannot be moved to another row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bastion.secretbox import SecretBox
from bastion.store.backends import Row
from bastion.store.models import (
    AuditEvent,
    CertificateRecord,
    Credset,
    Grant,
    GrantState,
    Profile,
    Role,
    SessionRecord,
    Target,
    TargetKind,
    TokenPurpose,
    TokenRecord,
    User,
)

USER_COLUMNS = (
    "id, name, role, ssh_keys, totp_secret, totp_last_step, locked_until, disabled, created_at,"
    " sponsor, engagement_until, org, engagement_reminded, engagement_ended_at"
)
TARGET_COLUMNS = (
    "id, name, kind, host, port, logins, principal, host_keys, host_ca_keys, dbname,"
    " created_at, removed_at, tls_mode, tls_ca, approvals, approvers, max_request"
)
GRANT_SELECT = (
    "SELECT g.id, g.user_id, u.name AS user_name, g.target_id, t.name AS target_name,"
    " g.login, g.credset, g.not_before, g.not_after, g.reason, g.requested_by,"
    " g.approved_by, g.state, g.options, g.created_at, g.revoked_at, g.revoked_by,"
    " g.request_id, g.profile_id, p.name AS profile_name"
    " FROM grants g JOIN users u ON u.id = g.user_id LEFT JOIN targets t ON t.id = g.target_id"
    " LEFT JOIN profiles p ON p.id = g.profile_id"
)
SESSION_SELECT = (
    "SELECT s.id, s.user_id, u.name AS user_name, s.target_id, t.name AS target_name,"
    " s.grant_id, s.node, s.protocol, s.login, s.client_addr, s.started_at, s.ended_at,"
    " s.end_reason, s.recording, s.bytes_in, s.bytes_out, s.events, s.final_hash,"
    " s.final_signature"
    " FROM sessions s JOIN users u ON u.id = s.user_id JOIN targets t ON t.id = s.target_id"
)
CERTIFICATE_COLUMNS = (
    "serial, key_id, principals, valid_after, valid_before, session_id, user_id, target_id,"
    " issued_at"
)
AUDIT_COLUMNS = "id, at, actor, action, subject, details, prev_hash, hash"
TOKEN_SELECT = (
    "SELECT k.id, k.purpose, k.user_id, u.name AS user_name, k.target_id,"  # noqa: S105  an SQL query
    " t.name AS target_name, k.grant_id, k.credset, k.token_hash, k.created_at,"
    " k.expires_at, k.revoked_at, k.revoked_by, k.last_used_at, k.created_from"
    " FROM tokens k JOIN users u ON u.id = k.user_id LEFT JOIN targets t ON t.id = k.target_id"
)


def dump_list(items: Iterable[str]) -> str:
    """A list of strings as stored JSON text."""
    return json.dumps(list(items))


def load_list(text: str) -> tuple[str, ...]:
    """Stored JSON text back to a tuple of strings."""
    value = json.loads(text)
    return tuple(str(v) for v in value)


def totp_context(user_name: str) -> bytes:
    """Authenticated context for a user's TOTP secret."""
    return f"user:{user_name}:totp".encode()


def credset_context(target_name: str, credset_name: str) -> bytes:
    """Authenticated context for a target's credential-set password."""
    return f"target:{target_name}:credset:{credset_name}".encode()


def seal(box: SecretBox, secret: str | None, context: bytes) -> bytes | None:
    """Encrypt a secret for storage (None stays None)."""
    return None if secret is None else box.seal(secret.encode("utf-8"), context)


def unseal(box: SecretBox, sealed: Any, context: bytes) -> str | None:
    """Decrypt a stored secret (raises ConfigError if the key does not match)."""
    return None if sealed is None else box.open(bytes(sealed), context).decode("utf-8")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def user(row: Row, box: SecretBox) -> User:
    """A users row as a User, TOTP secret decrypted."""
    return User(
        id=int(row["id"]),
        name=row["name"],
        role=Role(row["role"]),
        ssh_keys=load_list(row["ssh_keys"]),
        totp_secret=unseal(box, row["totp_secret"], totp_context(row["name"])),
        totp_last_step=None if row["totp_last_step"] is None else int(row["totp_last_step"]),
        locked_until=_opt_float(row["locked_until"]),
        disabled=bool(row["disabled"]),
        created_at=float(row["created_at"]),
        sponsor=row["sponsor"],
        engagement_until=_opt_float(row["engagement_until"]),
        org=row["org"],
        engagement_reminded=(
            None if row["engagement_reminded"] is None else int(row["engagement_reminded"])
        ),
        engagement_ended_at=_opt_float(row["engagement_ended_at"]),
    )


def credset(row: Row, target_name: str, box: SecretBox) -> Credset:
    """A credsets row as a Credset, password decrypted."""
    return Credset(
        name=row["name"],
        user=row["db_user"],
        password=unseal(box, row["password"], credset_context(target_name, row["name"])),
    )


PROFILE_COLUMNS = (
    "id, name, selector, logins, credset, options, max_duration, approvals, approvers,"
    " created_at, created_by, removed_at"
)


def profile(row: Row) -> Profile:
    """A profiles row as a Profile."""
    return Profile(
        id=int(row["id"]),
        name=row["name"],
        selector=row["selector"],
        logins=load_list(row["logins"]),
        credset=row["credset"],
        options=frozenset(load_list(row["options"])),
        max_duration=_opt_float(row["max_duration"]),
        approvals=None if row["approvals"] is None else int(row["approvals"]),
        approvers=load_list(row["approvers"]),
        created_at=float(row["created_at"]),
        created_by=row["created_by"],
        removed_at=_opt_float(row["removed_at"]),
    )


def target(
    row: Row, credsets: Sequence[Credset], labels: Mapping[str, str] | None = None
) -> Target:
    """A targets row (plus its credential sets and labels) as a Target."""
    return Target(
        id=int(row["id"]),
        name=row["name"],
        kind=TargetKind(row["kind"]),
        host=row["host"],
        port=int(row["port"]),
        logins=load_list(row["logins"]),
        principal=row["principal"],
        host_keys=load_list(row["host_keys"]),
        host_ca_keys=load_list(row["host_ca_keys"]),
        database=row["dbname"],
        credsets=tuple(credsets),
        created_at=float(row["created_at"]),
        tls_mode=row["tls_mode"],
        tls_ca=row["tls_ca"],
        approvals=None if row["approvals"] is None else int(row["approvals"]),
        approvers=tuple(load_list(row["approvers"])) if row["approvers"] else (),
        max_request=_opt_float(row["max_request"]),
        labels=dict(labels or {}),
        removed_at=_opt_float(row["removed_at"]),
    )


def grant(row: Row) -> Grant:
    """A GRANT_SELECT row as a Grant."""
    return Grant(
        id=int(row["id"]),
        user_id=int(row["user_id"]),
        user_name=row["user_name"],
        target_id=None if row["target_id"] is None else int(row["target_id"]),
        target_name=row["target_name"],
        login=row["login"],
        credset=row["credset"],
        not_before=float(row["not_before"]),
        not_after=float(row["not_after"]),
        reason=row["reason"],
        requested_by=row["requested_by"],
        approved_by=row["approved_by"],
        state=GrantState(row["state"]),
        options=frozenset(load_list(row["options"])),
        created_at=float(row["created_at"]),
        revoked_at=_opt_float(row["revoked_at"]),
        revoked_by=row["revoked_by"],
        request_id=None if row["request_id"] is None else int(row["request_id"]),
        profile_id=None if row["profile_id"] is None else int(row["profile_id"]),
        profile_name=row["profile_name"],
    )


def session(row: Row) -> SessionRecord:
    """A SESSION_SELECT row as a SessionRecord."""
    return SessionRecord(
        id=row["id"],
        user_id=int(row["user_id"]),
        user_name=row["user_name"],
        target_id=int(row["target_id"]),
        target_name=row["target_name"],
        grant_id=None if row["grant_id"] is None else int(row["grant_id"]),
        node=row["node"],
        protocol=row["protocol"],
        login=row["login"],
        client_addr=row["client_addr"],
        started_at=float(row["started_at"]),
        ended_at=_opt_float(row["ended_at"]),
        end_reason=row["end_reason"],
        recording=row["recording"],
        bytes_in=int(row["bytes_in"]),
        bytes_out=int(row["bytes_out"]),
        events=int(row["events"]),
        final_hash=row["final_hash"],
        final_signature=row["final_signature"],
    )


def certificate(row: Row) -> CertificateRecord:
    """A certificates row as a CertificateRecord."""
    return CertificateRecord(
        serial=int(row["serial"]),
        key_id=row["key_id"],
        principals=load_list(row["principals"]),
        valid_after=float(row["valid_after"]),
        valid_before=float(row["valid_before"]),
        session_id=row["session_id"],
        user_id=int(row["user_id"]),
        target_id=int(row["target_id"]),
        issued_at=float(row["issued_at"]),
    )


def audit_event(row: Row) -> AuditEvent:
    """An audit row as an AuditEvent, details parsed."""
    details = json.loads(row["details"])
    return AuditEvent(
        id=int(row["id"]),
        at=float(row["at"]),
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        details=details if isinstance(details, dict) else {"value": details},
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def token(row: Row) -> TokenRecord:
    """A TOKEN_SELECT row as a TokenRecord."""
    return TokenRecord(
        id=int(row["id"]),
        purpose=TokenPurpose(row["purpose"]),
        user_id=int(row["user_id"]),
        user_name=row["user_name"],
        target_id=None if row["target_id"] is None else int(row["target_id"]),
        target_name=row["target_name"],
        grant_id=None if row["grant_id"] is None else int(row["grant_id"]),
        credset=row["credset"],
        token_hash=row["token_hash"],
        created_at=float(row["created_at"]),
        expires_at=float(row["expires_at"]),
        created_from=row["created_from"],
        revoked_at=_opt_float(row["revoked_at"]),
        revoked_by=row["revoked_by"],
        last_used_at=_opt_float(row["last_used_at"]),
    )
