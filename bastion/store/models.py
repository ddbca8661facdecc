"""Plain records the state store hands out.

Frozen dataclasses, no behaviour beyond small derived facts: policy lives in
``bastion.grants`` and ``bastion.mfa``; persistence in ``bastion.store``.
Times are POSIX seconds (float, UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """What a person may do: contractors connect, admins administer, auditors read."""

    CONTRACTOR = "contractor"
    ADMIN = "admin"
    AUDITOR = "auditor"
    APPROVER = "approver"
    """Decides other people's access requests (over SSH, the CLI or the console)."""


class TargetKind(StrEnum):
    """The protocol a target speaks."""

    SSH = "ssh"
    POSTGRES = "postgres"


class GrantState(StrEnum):
    """Stored grant state; ``expired`` and ``not yet started`` are derived from time."""

    PENDING = "pending"
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


#: Upstream TLS modes a postgres target may use (libpq's sslmode names).
TLS_MODES = ("disable", "prefer", "require", "verify-full")


class TokenPurpose(StrEnum):
    """What a bearer token opens: the PostgreSQL listener or the control API."""

    DB = "db"
    CONTROL = "control"


#: Grant options that unlock something beyond a shell/exec session.
GRANT_OPTIONS = frozenset({"scp", "sftp", "port-forward", "agent"})


@dataclass(frozen=True)
class User:
    """A person who may log in; ``totp_secret`` is decrypted (None until enrolled)."""

    id: int
    name: str
    role: Role
    ssh_keys: tuple[str, ...]
    totp_secret: str | None = field(repr=False)
    """Kept out of ``repr``: a user logged or put in an error message never shows it."""
    totp_last_step: int | None
    locked_until: float | None
    disabled: bool
    created_at: float
    sponsor: str | None = None
    """Who vouches for a contractor: is reminded before the end and may extend it."""
    engagement_until: float | None = None
    """When the engagement ends (None: no end date); at that second access ends."""
    org: str | None = None
    """The contractor's organisation, for listings."""
    engagement_reminded: int | None = None
    """Smallest days-before-the-end reminder already sent (7, then 1); None: none yet."""
    engagement_ended_at: float | None = None
    """When the bastion ended the engagement (disabled the user); None: not ended."""


@dataclass(frozen=True)
class Credset:
    """A named upstream database credential (password decrypted; None for trust)."""

    name: str
    user: str
    password: str | None = field(repr=False)
    """Kept out of ``repr`` (and so out of any target printed in a log or an error)."""


@dataclass(frozen=True)
class Target:
    """A host or database reachable through the bastion."""

    id: int
    name: str
    kind: TargetKind
    host: str
    port: int
    logins: tuple[str, ...]
    principal: str
    host_keys: tuple[str, ...]
    host_ca_keys: tuple[str, ...]
    database: str | None
    credsets: tuple[Credset, ...]
    created_at: float
    tls_mode: str = "prefer"
    """Upstream TLS for a postgres target: disable, prefer, require or verify-full."""
    tls_ca: str | None = None
    """CA certificate file that verify-full checks the server against (None: system CAs)."""
    approvals: int | None = None
    """Distinct approvals a request for this target needs (None: ``[requests] approvals``)."""
    approvers: tuple[str, ...] = ()
    """Who may approve (names and ``@group``s); empty: any approver or admin."""
    max_request: float | None = None
    """Longest access a request may get (None: ``[requests] max_duration``)."""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Labels (``env=staging``) that access profiles select targets by."""
    removed_at: float | None = None
    """Set: retired (``bastion target remove``); the row stays for history."""

    @property
    def default_login(self) -> str | None:
        """The first configured login, used when neither grant nor client names one."""
        return self.logins[0] if self.logins else None


@dataclass(frozen=True)
class Profile:
    """A named set of targets (a label selector) and what a grant under it allows.

    ``removed_at`` set: retired; it stays for history and grants nothing.
    """

    id: int
    name: str
    selector: str
    logins: tuple[str, ...]
    credset: str | None
    options: frozenset[str]
    max_duration: float | None
    """Longest grant or request under this profile (None: no cap of its own)."""
    approvals: int | None
    """Approvals a request for this profile needs (None: ``[requests] approvals``)."""
    approvers: tuple[str, ...]
    """Who may approve its requests (names and ``@group``s); empty: any approver."""
    created_at: float
    created_by: str
    removed_at: float | None = None


@dataclass(frozen=True)
class Grant:
    """Permission for one user to reach one target as one login, inside a window.

    A profile grant names a profile instead of a target: as stored, ``target_id``
    and ``target_name`` are None; ``Store.list_grants(target_id=...)`` hands it out
    filled in for each target its profile's selector matches at that moment.
    """

    id: int
    user_id: int
    user_name: str
    target_id: int | None
    target_name: str | None
    login: str | None
    credset: str | None
    not_before: float
    not_after: float
    reason: str
    requested_by: str
    approved_by: str | None
    state: GrantState
    options: frozenset[str]
    created_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None
    request_id: int | None = None
    """The access request this grant came from (None: typed by an admin)."""
    profile_id: int | None = None
    profile_name: str | None = None
    """The access profile this grant is under (None: a grant for one target)."""

    def state_at(self, now: float) -> GrantState:
        """The effective state at ``now``: stored state, or EXPIRED once past not_after."""
        if self.state is GrantState.ACTIVE and now >= self.not_after:
            return GrantState.EXPIRED
        return self.state


@dataclass(frozen=True)
class SessionRecord:
    """One connection through the bastion, live (ended_at None) or finished."""

    id: str
    user_id: int
    user_name: str
    target_id: int
    target_name: str
    grant_id: int | None
    node: str
    protocol: str
    login: str | None
    client_addr: str
    started_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    recording: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    events: int = 0
    final_hash: str | None = None
    final_signature: str | None = None


@dataclass(frozen=True)
class CommandHit:
    """A command found by search: which session, when, what was typed."""

    session_id: str
    seq: int
    at: float
    text: str
    user_name: str
    target_name: str


@dataclass(frozen=True)
class IndexHit:
    """A search index entry that matched: which session, what kind, when, the line."""

    session_id: str
    kind: str
    """``commands``, ``output``, ``queries``, ``results`` or ``files``."""
    offset: float
    """Seconds since the session started when the text first appeared."""
    at: float
    """Wall-clock time of that moment."""
    text: str
    user_name: str
    target_name: str


@dataclass(frozen=True)
class CertificateRecord:
    """An upstream user certificate the CA issued."""

    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: float
    valid_before: float
    session_id: str | None
    user_id: int
    target_id: int
    issued_at: float


@dataclass(frozen=True)
class AuditEvent:
    """One append-only, hash-chained audit row."""

    id: int
    at: float
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True)
class TokenRecord:
    """A bearer token as stored: only its SHA-256 hash, never the token itself.

    ``target_id``/``grant_id``/``credset`` bind a database token to what it was
    issued for; control tokens leave them None.
    """

    id: int
    purpose: TokenPurpose
    user_id: int
    user_name: str
    target_id: int | None
    target_name: str | None
    grant_id: int | None
    credset: str | None
    token_hash: str
    created_at: float
    expires_at: float
    created_from: str
    revoked_at: float | None = None
    revoked_by: str | None = None
    last_used_at: float | None = None

    def live_at(self, now: float) -> bool:
        """Not revoked and not yet expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at


class RequestKind(StrEnum):
    """What a request asks for."""

    ACCESS = "access"
    EXTEND = "extend"
    BREAK_GLASS = "break-glass"
    COMMAND = "command"
    """A command, statement or file operation held by a ``hold`` rule until approved."""


class RequestState(StrEnum):
    """Where a request is; only ``approved`` ever grants anything."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    LAPSED = "lapsed"
    DROPPED = "dropped"


@dataclass(frozen=True)
class Approval:
    """One approver's yes, and how they narrowed the request (None: as asked)."""

    approver: str
    at: float
    duration: float | None
    targets: tuple[str, ...] | None
    options: frozenset[str] | None
    reason: str | None


@dataclass(frozen=True)
class AccessRequest:
    """A contractor's request for access, an extension, or break-glass."""

    id: int
    user_id: int
    user_name: str
    kind: RequestKind
    targets: tuple[str, ...]
    login: str | None
    options: frozenset[str]
    duration: float
    start_at: float | None
    reason: str
    state: RequestState
    created_at: float
    lapses_at: float
    extends_grant_id: int | None = None
    decided_at: float | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    reviewed_at: float | None = None
    reviewed_by: str | None = None
    review_note: str | None = None
    client_addr: str | None = None
    approvals: tuple[Approval, ...] = ()
    grant_ids: tuple[int, ...] = ()
    """The grants it became (one per target), once approved."""
    profile: str | None = None
    """The access profile asked for instead of targets (``targets`` is then empty)."""

    held: HeldCommand | None = None
    """What a ``command`` request holds (None for other kinds)."""


@dataclass(frozen=True)
class HeldCommand:
    """The command (statement, file operation) a ``hold`` rule stopped, and where."""

    kind: str
    """"command", "statement" or "file" (what ``Session.judge`` was asked about)."""
    text: str
    session_id: str
    rule: str | None


class NodeState(StrEnum):
    """How a registered node looks from the state store."""

    UP = "up"
    DRAINING = "draining"
    SILENT = "silent"
    """No heartbeat for three intervals: crashed, cut off, or paused."""
    STOPPED = "stopped"


HEARTBEAT_SECONDS = 5.0
"""How often a node writes its heartbeat; three missed beats make it silent (here, not in
``bastion.node_registry``, so that ``bastion nodes``' parser does not import asyncio)."""


@dataclass(frozen=True)
class NodeRecord:
    """A node (or worker) as it registered itself, with its live session count."""

    name: str
    pid: int
    version: str
    ssh_addr: str | None
    pg_addr: str | None
    control_addr: str | None
    control_cert: str | None
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    draining_until: float | None
    live_sessions: int = 0

    def state(self, now: float, heartbeat_interval: float) -> NodeState:
        """Up, draining, silent (missed three heartbeats) or stopped, as of ``now``."""
        if self.stopped_at is not None:
            return NodeState.STOPPED
        if now - self.heartbeat_at > 3 * heartbeat_interval:
            return NodeState.SILENT
        if self.draining_until is not None:
            return NodeState.DRAINING
        return NodeState.UP
