"""Admin actions on target labels, access profiles and profile grants, each audited.

Like ``bastion.admin_actions``: one function per action, the change and its audit
row in one store transaction, the same whichever door (CLI, control API,
``bastion apply``) asks. A label or profile change that narrows what a profile
reaches needs nothing more here: every node's time box re-reads the reach of its
live profile sessions and ends those no longer covered (``label-removed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bastion import audit_actions as actions
from bastion.admin_actions import Origin
from bastion.errors import UsageError
from bastion.grants import format_time
from bastion.profiles import check_profile_fit
from bastion.store import Store
from bastion.store.models import Grant, Profile, Target
from bastion.timeparse import format_duration


def profile_details(p: Profile) -> dict[str, Any]:
    """A profile's fields for an audit row or ``--json`` (lists, not tuples or sets)."""
    out = asdict(p)
    out["logins"] = list(p.logins)
    out["options"] = sorted(p.options)
    out["approvers"] = list(p.approvers)
    return out


def label_target(
    store: Store,
    origin: Origin,
    name: str,
    *,
    set_: Mapping[str, str],
    remove: Iterable[str] = (),
    now: float,
) -> Target:
    """Set and remove labels of a target; audits ``target.label``. Raises NotFound."""
    removed = sorted(set(remove))
    with store.audited_change(origin.actor, actions.TARGET_LABEL, name, now) as c:
        before = c.target(name)
        target = c.set_target_labels(name, set_, removed)
        c.details.update(
            origin.details,
            set=dict(set_),
            removed=removed,
            labels=dict(target.labels),
            before=dict(before.labels) if before is not None else {},
        )
    return target


def add_profile(store: Store, origin: Origin, *, now: float, **fields: Any) -> Profile:
    """Create a profile (fields as ``Store.add_profile``); audits ``profile.add``."""
    with store.audited_change(origin.actor, actions.PROFILE_ADD, fields.get("name"), now) as c:
        profile = c.add_profile(created_by=origin.actor, now=now, **fields)
        c.details.update(origin.details, **_audit_fields(profile))
    return profile


def set_profile(store: Store, origin: Origin, name: str, *, now: float, **fields: Any) -> Profile:
    """Change a profile (fields as ``Store.set_profile``); audits ``profile.set``."""
    with store.audited_change(origin.actor, actions.PROFILE_SET, name, now) as c:
        before = c.profile(name)
        profile = c.set_profile(name, **fields)
        c.details.update(origin.details, **_audit_fields(profile), before=_audit_fields(before))
    return profile


def remove_profile(store: Store, origin: Origin, name: str, now: float) -> Profile:
    """Retire a profile: its grants reach nothing now; audits ``profile.remove``."""
    with store.audited_change(origin.actor, actions.PROFILE_REMOVE, name, now) as c:
        profile = c.remove_profile(name, now)
        c.details.update(origin.details, **_audit_fields(profile))
    return profile


def _audit_fields(p: Profile) -> dict[str, Any]:
    out = profile_details(p)
    for key in ("id", "name", "created_at", "created_by"):
        out.pop(key)
    return out


def add_profile_grant(
    store: Store,
    origin: Origin,
    *,
    user: str,
    profile: str,
    not_before: float,
    not_after: float,
    login: str | None = None,
    credset: str | None = None,
    options: Sequence[str] | None = None,
    reason: str = "",
    now: float,
    request_id: int | None = None,
    approved_by: str | None = None,
    requested_by: str | None = None,
) -> Grant:
    """Grant ``user`` access under ``profile`` for a window; audits ``grant.add``.

    Login, credential set and options default from the profile; a login or
    options beyond the profile's are refused; the profile's ``max_duration``
    caps the window. Raises NotFound or UsageError.
    """
    with store.audited_change(origin.actor, actions.GRANT_ADD, None, now) as c:
        who = c.user(user)
        p = c.profile(profile)
        opts = p.options if options is None else frozenset(options)
        check_profile_fit(p, login, opts)
        if p.max_duration is not None and not_after - not_before > p.max_duration + 1e-6:
            raise UsageError(
                f"profile {p.name} allows at most {format_duration(p.max_duration)} "
                f"(asked: until {format_time(not_after)}); use a shorter --for"
            )
        grant = c.add_grant(
            user_id=who.id,
            target_id=None,
            profile_id=p.id,
            login=login,
            credset=credset if credset is not None else p.credset,
            not_before=not_before,
            not_after=not_after,
            reason=reason,
            requested_by=requested_by or origin.actor,
            approved_by=approved_by or origin.actor,
            options=opts,
            now=now,
            request_id=request_id,
        )
        c.subject = f"grant #{grant.id}"
        c.details.update(
            origin.details,
            user=who.name,
            profile=p.name,
            selector=p.selector,
            login=grant.login,
            credset=grant.credset,
            not_before=not_before,
            not_after=not_after,
            options=sorted(opts),
            reason=reason,
        )
    return grant
