"""The plan: what must change so the store matches the file, as a pure function.

``make_plan(desired, current, now, ...)`` compares the checked file with a
snapshot of the store and returns the changes in the order they are applied
(users who sponsor first, removals last), each with the diff line a person reads.
Nothing here reads the store or the clock, so every rule is tested without one.

Standing grants have their own module, ``grant_plan``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bastion.grants import format_time
from bastion.provision.changes import (
    AddProfile,
    AddTarget,
    AddUser,
    Change,
    Checker,
    Current,
    DisableUser,
    Plan,
    RemoveProfile,
    RemoveTarget,
    RevokeGrant,
    UpdateProfile,
    UpdateTarget,
    UpdateUser,
    key_body,
)
from bastion.provision.grant_plan import grant_subject, plan_grants
from bastion.provision.spec import Desired, ProfileSpec, TargetSpec, UserSpec
from bastion.store.models import Credset, GrantState, Profile, Role, Target, TargetKind, User
from bastion.timeparse import format_duration


def make_plan(
    desired: Desired,
    current: Current,
    now: float,
    *,
    prune: bool = False,
    require_end_date: bool = True,
) -> Plan:
    """The changes that make ``current`` match ``desired`` at ``now``.

    Raises SpecError (naming file, table and key) for a file the store cannot
    take: a sponsor who does not exist or is a contractor, a contractor without
    an end date, an end in the past, a grant naming an unknown user, target,
    login or credential set.
    """
    check = Checker(desired)
    _check_users(desired, current, now, check, require_end_date)
    out = _Building()
    _plan_users(desired, current, now, out)
    _plan_targets(desired, current, check, out)
    _plan_profiles(desired, current, out)
    removed_targets = {n for n in current.targets if n not in desired.targets}
    removed_profiles = {n for n in current.profiles if n not in desired.profiles}
    gone = (removed_targets | {f"profile {n}" for n in removed_profiles}) if prune else set()
    grant_changes, kept, grant_notes = plan_grants(desired, current, now, check, gone)
    out.notes += grant_notes
    stale = [
        g
        for g in current.grants
        if g.id not in kept
        and g.state_at(now) in (GrantState.ACTIVE, GrantState.PENDING)
        and (g.target_name or f"profile {g.profile_name}") not in gone
    ]
    revokes = [c for c in grant_changes if isinstance(c, RevokeGrant)]
    if prune:
        revokes += [
            RevokeGrant("-", "grant", grant_subject(g), ("not in the file",), g.id) for g in stale
        ]
    elif stale:
        out.left.append("standing grants " + ", ".join(f"#{g.id}" for g in stale))
    out.changes += revokes + [c for c in grant_changes if not isinstance(c, RevokeGrant)]
    _plan_removals(desired, current, prune, sorted(removed_targets), sorted(removed_profiles), out)
    if current.other_grants:
        out.notes.append(
            f"{current.other_grants} active grant(s) made by hand or by requests are not "
            "managed by apply and stay as they are"
        )
    return Plan(tuple(out.changes + out.disables), tuple(out.left), tuple(out.notes))


@dataclass
class _Building:
    """A plan being put together; disables go last, after every other change."""

    changes: list[Change] = field(default_factory=list)
    disables: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def _plan_users(desired: Desired, current: Current, now: float, out: _Building) -> None:
    sponsors_first = sorted(
        desired.users.values(), key=lambda u: (u.role is Role.CONTRACTOR, u.name)
    )
    for spec in sponsors_first:
        user = current.users.get(spec.name)
        if user is None:
            out.changes.append(_add_user(spec))
        else:
            update, note = _update_user(spec, user, current.groups.get(spec.name, ()), now)
            if update is not None:
                out.changes.append(update)
            if note:
                out.notes.append(note)
        if spec.disabled and (user is None or not user.disabled):
            out.disables.append(DisableUser("-", "user", spec.name, ("disabled = true",), "file"))


def _plan_targets(desired: Desired, current: Current, check: Checker, out: _Building) -> None:
    for spec in sorted(desired.targets.values(), key=lambda t: t.name):
        target = current.targets.get(spec.name)
        if target is None:
            out.changes.append(_add_target(spec))
            continue
        if target.kind is not spec.kind:
            raise check.fail(
                f"targets.{spec.name}",
                f"is {spec.kind.value} in the file but {target.kind.value} in the store; "
                "give the new one another name (or remove the old one first)",
            )
        diff = _target_diff(spec, target)
        want = dict(spec.labels)
        have = dict(target.labels)
        set_labels = tuple((k, v) for k, v in spec.labels if have.get(k) != v)
        remove = tuple(sorted(k for k in have if k not in want))
        labels = [
            f"label {k} {have[k]} -> {v}" if k in have else f"label {k}={v} added"
            for k, v in set_labels
        ] + [f"label {k} removed" for k in remove]
        if diff or labels:
            out.changes.append(
                UpdateTarget(
                    "~",
                    "target",
                    spec.name,
                    (*diff, *labels),
                    spec,
                    bool(diff),
                    set_labels,
                    remove,
                )  # fmt: skip
            )


def _profile_text(p: ProfileSpec | Profile) -> dict[str, str]:
    """A profile's fields as a person reads them, for diffs."""
    return {
        "select": p.selector,
        "logins": ",".join(p.logins) or "-",
        "credset": p.credset or "-",
        "allow": ",".join(sorted(p.options)) or "-",
        "max": format_duration(p.max_duration) if p.max_duration is not None else "-",
        "approvals": "-" if p.approvals is None else str(p.approvals),
        "approvers": ",".join(sorted(p.approvers)) or "-",
    }


def _plan_profiles(desired: Desired, current: Current, out: _Building) -> None:
    for spec in sorted(desired.profiles.values(), key=lambda p: p.name):
        want = _profile_text(spec)
        profile = current.profiles.get(spec.name)
        if profile is None:
            parts = tuple(f"{k} {v}" for k, v in want.items() if v != "-")
            out.changes.append(AddProfile("+", "profile", spec.name, parts, spec))
            continue
        have = _profile_text(profile)
        diff = tuple(f"{k} {have[k]} -> {v}" for k, v in want.items() if have[k] != v)
        if diff:
            out.changes.append(UpdateProfile("~", "profile", spec.name, diff, spec))


def _plan_removals(
    desired: Desired,
    current: Current,
    prune: bool,
    gone_targets: list[str],
    gone_profiles: list[str],
    out: _Building,
) -> None:
    gone_users = sorted(
        n for n, u in current.users.items() if n not in desired.users and not u.disabled
    )
    if prune:
        out.changes += [
            RemoveProfile("-", "profile", n, ("not in the file",)) for n in gone_profiles
        ]
        out.changes += [RemoveTarget("-", "target", n, ("not in the file",)) for n in gone_targets]
        out.disables += [
            DisableUser("-", "user", n, ("not in the file: disabled, live sessions end",), "prune")
            for n in gone_users
        ]
        return
    if gone_users:
        out.left.append("users " + ", ".join(gone_users))
    if gone_targets:
        out.left.append("targets " + ", ".join(gone_targets))
    if gone_profiles:
        out.left.append("profiles " + ", ".join(gone_profiles))


# --- users ------------------------------------------------------------------------------


def _check_users(
    desired: Desired, current: Current, now: float, check: Checker, require_end_date: bool
) -> None:
    for spec in desired.users.values():
        where = f"users.{spec.name}"
        before = current.users.get(spec.name)
        if spec.role is Role.CONTRACTOR and spec.until is None and require_end_date:
            raise check.fail(
                f"{where}.until",
                f"contractor {spec.name} needs an end date (until = 2027-01-31) and a "
                "sponsor; [users] require_end_date = false in bastion.toml allows none",
            )
        if spec.until is not None:
            if spec.sponsor is None:
                raise check.fail(
                    f"{where}.sponsor", "an end date needs a sponsor (reminded, may extend it)"
                )
            unchanged = before is not None and before.engagement_until == spec.until
            if spec.until <= now and not unchanged:
                raise check.fail(
                    f"{where}.until", f"{format_time(spec.until)} is not in the future"
                )
        if spec.sponsor is not None:
            if spec.sponsor == spec.name:
                raise check.fail(f"{where}.sponsor", f"{spec.name} cannot sponsor themselves")
            in_file = desired.users.get(spec.sponsor)
            stored = current.users.get(spec.sponsor)
            role = in_file.role if in_file else stored.role if stored else None
            if role is None:
                raise check.fail(
                    f"{where}.sponsor",
                    f"no user named '{spec.sponsor}' (add them to the file or the store)",
                )
            if role is Role.CONTRACTOR:
                raise check.fail(
                    f"{where}.sponsor",
                    f"{spec.sponsor} is a contractor; a sponsor is an admin or approver",
                )


def _when(t: float | None) -> str:
    return format_time(t) if t is not None else "none"


def _add_user(spec: UserSpec) -> AddUser:
    parts = [spec.role.value, f"{len(spec.keys)} key(s)"]
    if spec.groups:
        parts.append(f"groups {','.join(spec.groups)}")
    if spec.sponsor:
        parts.append(f"sponsor {spec.sponsor}")
    if spec.until is not None:
        parts.append(f"until {format_time(spec.until)}")
    if spec.org:
        parts.append(f"org {spec.org}")
    parts.append(f"enrol TOTP with: bastion user reset-mfa {spec.name}")
    return AddUser("+", "user", spec.name, tuple(parts), spec)


def _update_user(
    spec: UserSpec, user: User, groups: Sequence[str], now: float
) -> tuple[UpdateUser | None, str | None]:
    diff: list[str] = []
    role = spec.role if spec.role is not user.role else None
    if role is not None:
        diff.append(f"role {user.role.value} -> {role.value}")
    have = {key_body(k) for k in user.ssh_keys}
    want = {key_body(k) for k in spec.keys}
    keys = spec.keys if have != want else None
    if keys is not None:
        diff.append(f"keys +{len(want - have)} -{len(have - want)}")
    new_groups = tuple(spec.groups) if tuple(sorted(groups)) != tuple(spec.groups) else None
    if new_groups is not None:
        diff.append(f"groups {','.join(sorted(groups)) or '-'} -> {','.join(spec.groups) or '-'}")
    engagement = False
    for label, old, new in (
        ("sponsor", user.sponsor, spec.sponsor),
        ("org", user.org, spec.org),
    ):
        if old != new:
            engagement = True
            diff.append(f"{label} {old or '-'} -> {new or '-'}")
    if user.engagement_until != spec.until:
        engagement = True
        diff.append(f"until {_when(user.engagement_until)} -> {_when(spec.until)}")
    enable = False
    note: str | None = None
    if user.disabled and not spec.disabled:
        ended = spec.until is not None and spec.until <= now
        if ended:
            note = (
                f"user {spec.name} stays disabled: the engagement ended "
                f"{format_time(spec.until or 0.0)}; a later until re-enables"
            )
        else:
            enable = True
            diff.append("enabled")
    if not diff:
        return None, note
    return (
        UpdateUser(
            "~", "user", spec.name, tuple(diff), spec, role, keys, new_groups, engagement, enable
        ),
        note,
    )


# --- targets ----------------------------------------------------------------------------


def _address(kind: TargetKind, host: str, port: int) -> str:
    return f"{kind.value} {host}:{port}"


def _add_target(spec: TargetSpec) -> AddTarget:
    parts = [_address(spec.kind, spec.host, spec.port)]
    if spec.kind is TargetKind.SSH:
        parts.append(f"logins {','.join(spec.logins)}")
    else:
        parts.append(f"database {spec.database}")
        parts += [f"credset {n} ({src})" for n, src in spec.credset_sources]
    parts += [f"label {k}={v}" for k, v in spec.labels]
    return AddTarget("+", "target", spec.name, tuple(parts), spec)


def _target_diff(spec: TargetSpec, target: Target) -> list[str]:
    diff: list[str] = []
    if (spec.host, spec.port) != (target.host, target.port):
        diff.append(f"address {target.host}:{target.port} -> {spec.host}:{spec.port}")
    if spec.kind is TargetKind.SSH:
        if spec.logins != target.logins:
            diff.append(f"logins {','.join(target.logins)} -> {','.join(spec.logins)}")
        if spec.principal != target.principal:
            diff.append(f"principal {target.principal} -> {spec.principal}")
        diff += _key_diff("host keys", target.host_keys, spec.host_keys)
        diff += _key_diff("host CA keys", target.host_ca_keys, spec.host_ca_keys)
    else:
        if spec.database != target.database:
            diff.append(f"database {target.database} -> {spec.database}")
        if spec.tls_mode != target.tls_mode or spec.tls_ca != target.tls_ca:
            diff.append(f"tls {target.tls_mode} -> {spec.tls_mode}")
        diff += _credset_diff(spec, target.credsets)
    return diff


def _key_diff(what: str, have: Iterable[str], want: Iterable[str]) -> list[str]:
    a, b = {key_body(k) for k in have}, {key_body(k) for k in want}
    return [] if a == b else [f"{what} +{len(b - a)} -{len(a - b)}"]


def _credset_diff(spec: TargetSpec, have: Sequence[Credset]) -> list[str]:
    old = {c.name: c for c in have}
    new = {c.name: c for c in spec.credsets}
    sources = dict(spec.credset_sources)
    diff = [f"credset {n} removed" for n in sorted(old.keys() - new.keys())]
    for name in sorted(new):
        c = new[name]
        o = old.get(name)
        if o is None:
            diff.append(f"credset {name} added ({sources.get(name, 'trust')})")
            continue
        if o.user != c.user:
            diff.append(f"credset {name} user {o.user} -> {c.user}")
        if o.password != c.password:
            diff.append(f"credset {name} password changed ({sources.get(name, 'trust')})")
    return diff
