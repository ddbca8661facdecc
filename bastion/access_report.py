"""Effective access as data: what a user can reach now, under which grants, and what stops them.

The types ``bastion access`` prints, the control API sends (``user_access``) and the
console shows. Like ``bastion.control.messages`` this module imports only the
standard library, so the console can parse a reply without loading the server side;
``bastion.effective_access`` fills these in from the node's own admission code.
Times are Unix seconds; ``describe`` is the one plain-text rendering (the CLI's).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "GrantWhy",
    "TargetAccess",
    "UserAccess",
    "Way",
    "access_from_wire",
    "access_to_wire",
    "describe",
]


@dataclass(frozen=True)
class GrantWhy:
    """One grant of the user on the target, and where it came from."""

    id: int
    profile: str | None
    """The access profile the grant names (None: a grant for this target directly)."""
    selector: str | None
    """That profile's label selector, which the target's labels match now."""
    request: int | None
    """The access request the grant was made from (None: typed by an admin)."""
    request_kind: str | None
    """"access", "extend" or "break-glass" when ``request`` is set."""
    login: str | None
    credset: str | None
    options: tuple[str, ...]
    not_before: float
    not_after: float
    state: str
    """"usable", "not-started", "pending", "expired" or "revoked", at the time asked."""
    why_not: str
    """Why this grant does not let the user in now ("" when it does)."""
    reason: str
    approved_by: str | None


@dataclass(frozen=True)
class Way:
    """One way in: as this login (or credential set), under this grant, until then."""

    login: str | None
    grant: int
    until: float


@dataclass(frozen=True)
class TargetAccess:
    """Can the user reach this target now; how (``ways``) or why not (``blocked``)."""

    target: str
    kind: str
    """"ssh" or "postgres"."""
    removed: bool
    labels: dict[str, str]
    """The target's labels now (what profile selectors match)."""
    reachable: bool
    ways: tuple[Way, ...]
    """What the grants allow now, as the node's admission picks (also when ``blocked``)."""
    blocked: tuple[str, ...]
    """Why the user cannot connect although listed (the user's state, then admission's words)."""
    grants: tuple[GrantWhy, ...]


@dataclass(frozen=True)
class UserAccess:
    """A user's effective access at ``at``."""

    user: str
    role: str
    state: str
    """"active", "ended" (engagement over), "disabled" or "locked"."""
    sponsor: str | None
    engagement_until: float | None
    login_refused: str | None
    """Why every SSH login of this user is refused now (None: logins are let through)."""
    at: float
    targets: tuple[TargetAccess, ...]
    pending_requests: tuple[int, ...]
    """Access requests of this user waiting for a decision."""


def access_to_wire(access: UserAccess) -> dict[str, Any]:
    """``access`` as a JSON object (tuples become lists)."""
    return asdict(access)


class WireError(ValueError):
    """A reply that is not a UserAccess object (the message says which part)."""


def _build(cls: type[Any], body: object) -> Any:
    if not isinstance(body, dict):
        raise WireError(f"expected a {cls.__name__} object")
    try:
        return cls(**body)
    except TypeError as e:
        raise WireError(f"malformed {cls.__name__}: {e}") from e


def _items(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise WireError(f"'{key}' must be a list")
    return value


def access_from_wire(body: object) -> UserAccess:
    """Parse a ``user_access`` reply (raises WireError, a ValueError, if it is malformed)."""
    if not isinstance(body, dict):
        raise WireError("expected a UserAccess object")
    targets = []
    for raw in _items(body, "targets"):
        if not isinstance(raw, dict):
            raise WireError("a target of a UserAccess must be an object")
        grants = tuple(
            _build(GrantWhy, {**g, "options": tuple(_items(g, "options"))})
            for g in _items(raw, "grants")
            if isinstance(g, dict)
        )
        ways = tuple(_build(Way, w) for w in _items(raw, "ways"))
        targets.append(
            _build(
                TargetAccess,
                {**raw, "ways": ways, "grants": grants, "blocked": tuple(_items(raw, "blocked"))},
            )
        )
    fields = {
        **body,
        "targets": tuple(targets),
        "pending_requests": tuple(_items(body, "pending_requests")),
    }
    access: UserAccess = _build(UserAccess, fields)
    return access


def when(t: float) -> str:
    """A time as grants and refusals print it (UTC, to the second)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def grant_line(g: GrantWhy) -> str:
    """``grant #3 via profile staging-web from request #9: usable, as deploy, …``."""
    source = f"via profile {g.profile} ({g.selector})" if g.profile else "direct"
    if g.request is not None:
        source += f" from {g.request_kind or 'access'} request #{g.request}"
    what = f"as {g.login}" if g.login else f"credential set {g.credset}" if g.credset else ""
    parts = [f"grant #{g.id} {source}: {g.state}", what]
    if g.options:
        parts.append("allows " + ",".join(g.options))
    parts.append(f"{when(g.not_before)} -> {when(g.not_after)}")
    if g.reason:
        parts.append(f"reason: {g.reason}")
    if g.why_not:
        parts.append(f"({g.why_not})")
    return ", ".join(p for p in parts if p)


def way_line(w: Way, kind: str) -> str:
    """``as deploy under grant #3 until …``."""
    how = f"credential set {w.login}" if kind == "postgres" else f"as {w.login}"
    return f"{how} under grant #{w.grant} until {when(w.until)}"


def target_line(t: TargetAccess) -> str:
    """One target's verdict: reachable how, or not and why."""
    name = t.target + (" (removed)" if t.removed else "")
    if t.reachable:
        return f"{name} [{t.kind}] YES: " + "; ".join(way_line(w, t.kind) for w in t.ways)
    return f"{name} [{t.kind}] NO: " + "; ".join(t.blocked or ("no usable grant",))


def describe(access: UserAccess, *, grants: bool = True) -> list[str]:
    """The plain-text report: the user, then each target with its grants indented."""
    head = f"{access.user} ({access.role}, {access.state})"
    if access.engagement_until is not None:
        head += f", engagement until {when(access.engagement_until)}"
    if access.sponsor:
        head += f", sponsor {access.sponsor}"
    lines = [head]
    if access.login_refused:
        lines.append(f"  cannot log in: {access.login_refused}")
    if not access.targets:
        lines.append("  no target: no grant reaches any target now")
    for t in access.targets:
        lines.append("  " + target_line(t))
        if grants:
            lines += ["      " + grant_line(g) for g in t.grants]
    if access.pending_requests:
        ids = ", ".join(f"#{i}" for i in access.pending_requests)
        lines.append(f"  pending requests: {ids} (see 'bastion request list')")
    return lines
