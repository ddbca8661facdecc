"""Putting a plan into effect: every change audited, all of them in one transaction.

Each change appends the audit row the matching CLI command writes (``user.add``,
``target.remove``, ``grant.add``, ...), with ``via = "apply"``, the file and its
sha256 in the details, so ``bastion audit --action user.`` shows provisioning
next to hand work. The whole plan commits or nothing does. Disabling a user is
``admin_actions.disable_user``'s path: their live sessions end (on whichever
node runs them, within a poll), tokens and pending requests are revoked.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from bastion import audit_actions as actions
from bastion.admin_actions import Origin, cli_actor, disable_user_in
from bastion.errors import NotFound
from bastion.grants import is_usable
from bastion.profile_actions import profile_details
from bastion.provision.changes import (
    APPLY_REQUESTER,
    AddGrant,
    AddProfile,
    AddTarget,
    AddUser,
    Change,
    Current,
    DisableUser,
    Plan,
    RemoveProfile,
    RemoveTarget,
    RevokeGrant,
    UpdateProfile,
    UpdateTarget,
    UpdateUser,
)
from bastion.provision.spec import Desired, ProfileSpec, TargetSpec
from bastion.store import Store
from bastion.store.audited import AuditedBatch, AuditedChange, audited_batch
from bastion.store.models import AuditEvent, GrantState, Target, TargetKind


def apply_origin(desired: Desired) -> Origin:
    """The CLI's actor, with the file and its hash in every audit row."""
    return Origin(
        cli_actor(),
        MappingProxyType(
            {
                "via": "apply",
                "uid": os.getuid(),
                "login": getpass.getuser(),
                "file": desired.path,
                "sha256": desired.sha256,
            }
        ),
    )


def snapshot(store: Store, now: float) -> Current:
    """What ``make_plan`` compares the file with: users, groups, live targets, grants."""
    users = store.list_users()
    grants = store.list_grants()
    return Current(
        users={u.name: u for u in users},
        groups={u.name: store.user_groups(u.id) for u in users},
        targets={t.name: t for t in store.list_targets()},
        profiles={p.name: p for p in store.list_profiles()},
        grants=tuple(g for g in grants if g.requested_by == APPLY_REQUESTER),
        other_grants=sum(
            1 for g in grants if g.requested_by != APPLY_REQUESTER and is_usable(g, now)
        ),
    )


def execute(store: Store, plan: Plan, origin: Origin, now: float) -> list[AuditEvent]:
    """Apply every change of ``plan`` in one transaction; returns the audit rows written.

    Raises StoreError (nothing is changed then) if the store refuses a step, e.g.
    because someone changed it between the plan and now: run apply again.
    """
    if not plan.changes:
        return []
    with audited_batch(store) as batch:
        for change in plan.changes:
            _STEPS[type(change)](batch, change, origin, now)
    return batch.events


def _add_user(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, AddUser) and change.spec is not None  # noqa: S101
    spec = change.spec
    with batch.change(origin.actor, actions.USER_ADD, spec.name, now) as c:
        user = c.add_user(spec.name, spec.role, spec.keys, now)
        if spec.groups:
            c.set_user_groups(user.id, spec.groups)
        if spec.sponsor or spec.until is not None or spec.org:
            c.set_engagement(spec.name, sponsor=spec.sponsor, until=spec.until, org=spec.org)
        c.details.update(
            origin.details, role=spec.role.value, keys=len(spec.keys), groups=list(spec.groups),
            sponsor=spec.sponsor, until=spec.until, org=spec.org, totp="not enrolled",
        )  # fmt: skip


def _update_user(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, UpdateUser) and change.spec is not None  # noqa: S101
    spec, name = change.spec, change.subject
    if change.role is not None:
        with batch.change(origin.actor, actions.USER_SET_ROLE, name, now) as c:
            before = c.user(name)
            c.set_user_role(before.id, change.role)
            c.details.update(origin.details, role=change.role.value, before=before.role.value)
    if change.keys is not None:
        with batch.change(origin.actor, actions.USER_SET_KEYS, name, now) as c:
            before = c.user(name)
            c.set_user_keys(before.id, change.keys)
            c.details.update(origin.details, keys=len(change.keys), before=len(before.ssh_keys))
    if change.groups is not None:
        with batch.change(origin.actor, actions.USER_SET_GROUPS, name, now) as c:
            before = c.user(name)
            old = c.user_groups(before.id)
            c.set_user_groups(before.id, change.groups)
            c.details.update(origin.details, groups=list(change.groups), before=list(old))
    if change.engagement:
        with batch.change(origin.actor, actions.USER_SET_ENGAGEMENT, name, now) as c:
            before = c.user(name)
            fields: dict[str, Any] = {}  # only what changed: a new end resets its reminders
            if before.sponsor != spec.sponsor:
                fields["sponsor"] = spec.sponsor
            if before.org != spec.org:
                fields["org"] = spec.org
            if before.engagement_until != spec.until:
                fields["until"] = spec.until
            after = c.set_engagement(name, **fields)
            c.details.update(
                origin.details, until=after.engagement_until, before=before.engagement_until,
                sponsor=after.sponsor, org=after.org,
            )  # fmt: skip
    if change.enable:
        with batch.change(origin.actor, actions.USER_ENABLE, name, now) as c:
            c.set_user_disabled(name, False)
            c.details.update(origin.details)


def _disable_user(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, DisableUser)  # noqa: S101
    why = "not in the provisioning file" if change.why == "prune" else "disabled in the file"
    with batch.change(origin.actor, actions.USER_DISABLE, change.subject, now) as c:
        disable_user_in(c, origin, change.subject, why, now)


def _target_fields(spec: TargetSpec) -> dict[str, Any]:
    return {
        "host": spec.host,
        "port": spec.port,
        "logins": list(spec.logins),
        "principal": spec.principal,
        "host_keys": list(spec.host_keys),
        "host_ca_keys": list(spec.host_ca_keys),
        "database": spec.database,
        "credsets": list(spec.credsets),
        "tls_mode": spec.tls_mode,
        "tls_ca": spec.tls_ca,
    }


def _target_details(spec: TargetSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": spec.kind.value, "host": spec.host, "port": spec.port}
    if spec.kind is TargetKind.POSTGRES:
        out |= {
            "database": spec.database,
            "credsets": [c.name for c in spec.credsets],
            "tls": spec.tls_mode,
        }
    else:
        out |= {"logins": list(spec.logins), "principal": spec.principal}
    return out


def _add_target(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, AddTarget) and change.spec is not None  # noqa: S101
    spec = change.spec
    with batch.change(origin.actor, actions.TARGET_ADD, spec.name, now) as c:
        c.add_target(
            name=spec.name, kind=spec.kind, labels=dict(spec.labels), now=now,
            **_target_fields(spec),
        )  # fmt: skip
        c.details.update(origin.details, **_target_details(spec), labels=dict(spec.labels))


def _update_target(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, UpdateTarget) and change.spec is not None  # noqa: S101
    spec = change.spec
    if change.fields:
        with batch.change(origin.actor, actions.TARGET_UPDATE, spec.name, now) as c:
            target = _live(c, spec.name)
            c.update_target(target, **_target_fields(spec))
            changes = [d for d in change.details if not d.startswith("label ")]
            c.details.update(origin.details, changes=changes, **_target_details(spec))
    if change.set_labels or change.remove_labels:
        with batch.change(origin.actor, actions.TARGET_LABEL, spec.name, now) as c:
            before = _live(c, spec.name)
            after = c.set_target_labels(
                spec.name, dict(change.set_labels), list(change.remove_labels)
            )
            c.details.update(
                origin.details, set=dict(change.set_labels), removed=list(change.remove_labels),
                labels=dict(after.labels), before=dict(before.labels),
            )  # fmt: skip


def _remove_target(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, RemoveTarget)  # noqa: S101
    with batch.change(origin.actor, actions.TARGET_REMOVE, change.subject, now) as c:
        c.remove_target(change.subject, now)
        c.details.update(origin.details)


def _profile_fields(spec: ProfileSpec) -> dict[str, Any]:
    return {
        "selector": spec.selector,
        "logins": list(spec.logins),
        "credset": spec.credset,
        "options": sorted(spec.options),
        "max_duration": spec.max_duration,
        "approvals": spec.approvals,
        "approvers": list(spec.approvers),
    }


def _add_profile(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, AddProfile) and change.spec is not None  # noqa: S101
    spec = change.spec
    with batch.change(origin.actor, actions.PROFILE_ADD, spec.name, now) as c:
        profile = c.add_profile(
            name=spec.name, created_by=origin.actor, now=now, **_profile_fields(spec)
        )
        c.details.update(origin.details, **_profile_audit(profile_details(profile)))


def _update_profile(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, UpdateProfile) and change.spec is not None  # noqa: S101
    spec = change.spec
    with batch.change(origin.actor, actions.PROFILE_SET, spec.name, now) as c:
        before = c.profile(spec.name)
        after = c.set_profile(spec.name, **_profile_fields(spec))
        c.details.update(
            origin.details, **_profile_audit(profile_details(after)),
            before=_profile_audit(profile_details(before)), changes=list(change.details),
        )  # fmt: skip


def _remove_profile(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, RemoveProfile)  # noqa: S101
    with batch.change(origin.actor, actions.PROFILE_REMOVE, change.subject, now) as c:
        profile = c.remove_profile(change.subject, now)
        c.details.update(origin.details, **_profile_audit(profile_details(profile)))


def _profile_audit(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in ("id", "name", "created_at", "created_by")}


def _add_grant(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, AddGrant)  # noqa: S101
    with batch.change(origin.actor, actions.GRANT_ADD, change.subject, now) as c:
        user = c.user(change.user)
        target_id = profile_id = None
        where: dict[str, Any] = {}
        if change.target is not None:
            target_id = _live(c, change.target).id
            where["target"] = change.target
        else:
            profile = c.profile(change.profile or "")
            profile_id = profile.id
            where |= {"profile": profile.name, "selector": profile.selector}
        grant = c.add_grant(
            user_id=user.id, target_id=target_id, profile_id=profile_id, login=change.login,
            credset=change.credset, not_before=change.not_before, not_after=change.not_after,
            reason=change.reason, requested_by=APPLY_REQUESTER, approved_by=origin.actor,
            options=change.options, now=now, state=GrantState.ACTIVE,
        )  # fmt: skip
        c.subject = f"grant #{grant.id}"
        c.details.update(
            origin.details, user=user.name, **where, login=change.login,
            credset=change.credset, not_before=change.not_before, not_after=change.not_after,
            options=sorted(change.options), reason=change.reason,
        )  # fmt: skip


def _revoke_grant(batch: AuditedBatch, change: Any, origin: Origin, now: float) -> None:
    assert isinstance(change, RevokeGrant)  # noqa: S101
    with batch.change(origin.actor, actions.GRANT_REVOKE, f"grant #{change.grant_id}", now) as c:
        grant = c.revoke_grant(change.grant_id, origin.actor, now)
        where = {"target": grant.target_name} if grant.target_name else {}
        if grant.profile_name:
            where["profile"] = grant.profile_name
        c.details.update(
            origin.details, user=grant.user_name, **where,
            why=change.details[0] if change.details else None,
        )  # fmt: skip


def _live(c: AuditedChange, name: str) -> Target:
    target = c.target(name)
    if target is None:
        raise NotFound(f"target {name} vanished while applying; run apply again")
    return target


_STEPS: dict[type[Change], Callable[[AuditedBatch, Change, Origin, float], None]] = {
    AddUser: _add_user,
    UpdateUser: _update_user,
    DisableUser: _disable_user,
    AddTarget: _add_target,
    UpdateTarget: _update_target,
    RemoveTarget: _remove_target,
    AddProfile: _add_profile,
    UpdateProfile: _update_profile,
    RemoveProfile: _remove_profile,
    AddGrant: _add_grant,
    RevokeGrant: _revoke_grant,
}
