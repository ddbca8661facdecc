"""The plan: what must change so the store matches the file, as a pure function.

``make_plan(desired, current, now, ...)`` compares the checked file with a
snapshot of the store and returns the changes in the order they are applied
(users who sponsor first, removals last), each with the diff line a person reads.
Nothing here reads the store or the clock, so every rule is tested without one.

Standing grants are those ``apply`` created (``requested_by = "apply"``); grants
made by hand or by access requests are never touched. A standing grant is
identified by (user, target, login or credential set). Its end is ``until``, or
``for`` after it was first created: re-applying never moves that end, and a
standing grant that has expired is *not* renewed by re-applying the same file (it
would otherwise never end); the plan says so, and a later ``until`` (or a longer
``for``) renews it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bastion.grants import format_time
from bastion.provision.spec import Desired, GrantSpec, SpecError, TargetSpec, UserSpec
from bastion.store.models import Credset, Grant, GrantState, Role, Target, TargetKind, User

APPLY_REQUESTER = "apply"
"""``requested_by`` of the standing grants ``apply`` creates and manages."""


@dataclass(frozen=True)
class Current:
    """The part of the store ``apply`` manages, read once before planning."""

    users: Mapping[str, User] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    targets: Mapping[str, Target] = field(default_factory=dict)
    """Live targets by name."""
    grants: tuple[Grant, ...] = ()
    """Standing grants (``requested_by = "apply"``), in every state."""
    other_grants: int = 0
    """Active grants made by hand or by requests: never touched, counted in the summary."""


@dataclass(frozen=True)
class Change:
    """One step of the plan; ``line`` is its diff line (``+ user alice: ...``)."""

    sign: str
    kind: str
    subject: str
    details: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        """The diff line a person reads."""
        text = f"{self.sign} {self.kind} {self.subject}"
        return f"{text}: {', '.join(self.details)}" if self.details else text


@dataclass(frozen=True)
class AddUser(Change):
    """Create a user (without TOTP: enrolment stays per user)."""

    spec: UserSpec | None = None


@dataclass(frozen=True)
class UpdateUser(Change):
    """Change a user's role, keys, groups, engagement or enabled state (None: keep)."""

    spec: UserSpec | None = None
    role: Role | None = None
    keys: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    engagement: bool = False
    enable: bool = False


@dataclass(frozen=True)
class DisableUser(Change):
    """Disable a user, end their live sessions and revoke their tokens (never delete)."""

    why: str = ""


@dataclass(frozen=True)
class AddTarget(Change):
    """Register a target."""

    spec: TargetSpec | None = None


@dataclass(frozen=True)
class UpdateTarget(Change):
    """Change a live target in place (its id, grants and sessions stay)."""

    spec: TargetSpec | None = None


@dataclass(frozen=True)
class RemoveTarget(Change):
    """Retire a target (its grants and tokens are revoked; the row stays for history)."""


@dataclass(frozen=True)
class AddGrant(Change):
    """Create a standing grant for a resolved target and login or credential set."""

    user: str = ""
    target: str = ""
    login: str | None = None
    credset: str | None = None
    options: frozenset[str] = frozenset()
    not_before: float = 0.0
    not_after: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RevokeGrant(Change):
    """End a standing grant the file no longer names (or one being replaced)."""

    grant_id: int = 0


@dataclass(frozen=True)
class Plan:
    """The changes in order, and what the file leaves alone."""

    changes: tuple[Change, ...]
    left_alone: tuple[str, ...] = ()
    """Things in the store the file does not name, kept because there was no --prune."""
    notes: tuple[str, ...] = ()
    """Facts worth knowing that change nothing (an expired grant not renewed)."""

    def render(self) -> str:
        """The plan as a person reads it: diff lines, notes, one summary line."""
        lines = [c.line for c in self.changes]
        lines += [f"  note: {n}" for n in self.notes]
        if self.changes:
            counts = {s: sum(1 for c in self.changes if c.sign == s) for s in "+~-"}
            lines.append(
                f"{len(self.changes)} change(s): {counts['+']} to add, {counts['~']} to change, "
                f"{counts['-']} to remove or disable"
            )
        else:
            lines.append("no changes")
        if self.left_alone:
            lines.append(
                "left alone (not in the file; --prune disables or removes them): "
                + "; ".join(self.left_alone)
            )
        return "\n".join(lines) + "\n"


def key_body(line: str) -> str:
    """An OpenSSH public key without its comment: two lines with one body are one key."""
    return " ".join(line.split()[:2])


class _Checker:
    """Raises SpecError in the file's words for a plan that breaks a rule."""

    def __init__(self, desired: Desired) -> None:
        self.path = desired.path

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {problem}")


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
    check = _Checker(desired)
    _check_users(desired, current, now, check, require_end_date)
    out = _Building()
    _plan_users(desired, current, now, out)
    _plan_targets(desired, current, check, out)
    removed_targets = {n for n in current.targets if n not in desired.targets}
    gone = removed_targets if prune else set()
    grant_changes, kept, grant_notes = _plan_grants(desired, current, now, check, gone)
    out.notes += grant_notes
    stale = [
        g
        for g in current.grants
        if g.id not in kept
        and g.state_at(now) in (GrantState.ACTIVE, GrantState.PENDING)
        and g.target_name not in gone
    ]
    revokes = [c for c in grant_changes if isinstance(c, RevokeGrant)]
    if prune:
        revokes += [
            RevokeGrant("-", "grant", _grant_subject(g), ("not in the file",), g.id) for g in stale
        ]
    elif stale:
        out.left.append("standing grants " + ", ".join(f"#{g.id}" for g in stale))
    out.changes += revokes + [c for c in grant_changes if not isinstance(c, RevokeGrant)]
    _plan_removals(desired, current, prune, sorted(removed_targets), out)
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


def _plan_targets(desired: Desired, current: Current, check: _Checker, out: _Building) -> None:
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
        if diff:
            out.changes.append(UpdateTarget("~", "target", spec.name, tuple(diff), spec))


def _plan_removals(
    desired: Desired, current: Current, prune: bool, gone_targets: list[str], out: _Building
) -> None:
    gone_users = sorted(
        n for n, u in current.users.items() if n not in desired.users and not u.disabled
    )
    if prune:
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


# --- users ------------------------------------------------------------------------------


def _check_users(
    desired: Desired, current: Current, now: float, check: _Checker, require_end_date: bool
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


# --- grants -----------------------------------------------------------------------------


def _grant_subject(g: Grant) -> str:
    how = f"as {g.login}" if g.login else f"credset {g.credset}" if g.credset else ""
    return f"#{g.id} {g.user_name} -> {g.target_name} {how}".rstrip()


def _resolve(
    g: GrantSpec,
    desired: Desired,
    current: Current,
    check: _Checker,
    gone: set[str],
) -> tuple[str, str | None, str | None]:
    """(target, login, credset) of a target grant, defaults filled in and checked."""
    if g.user not in desired.users and g.user not in current.users:
        raise check.fail(f"{g.where}.user", f"no user named '{g.user}' in the file or the store")
    name = g.target or ""
    spec = desired.targets.get(name)
    stored = current.targets.get(name)
    if spec is None and stored is None:
        raise check.fail(f"{g.where}.target", f"no target named '{name}' in the file or the store")
    if spec is None and name in gone:
        raise check.fail(
            f"{g.where}.target", f"target {name} is not in the file, so --prune removes it"
        )
    kind = spec.kind if spec else stored.kind if stored else TargetKind.SSH
    logins = spec.logins if spec else stored.logins if stored else ()
    credsets = [c.name for c in (spec.credsets if spec else stored.credsets if stored else ())]
    if kind is TargetKind.SSH:
        if g.credset is not None:
            raise check.fail(f"{g.where}.credset", f"{name} is an SSH target: give a login")
        login = g.login or (logins[0] if logins else None)
        if login not in logins:
            raise check.fail(
                f"{g.where}.login", f"target {name} has no login '{login}' ({', '.join(logins)})"
            )
        return name, login, None
    if g.login is not None:
        raise check.fail(f"{g.where}.login", f"{name} is a database: give a credset")
    if g.options:
        raise check.fail(
            f"{g.where}.allow", f"allow options are for SSH targets; {name} is a database"
        )
    credset = g.credset
    if credset is None:
        if len(credsets) != 1:
            raise check.fail(
                f"{g.where}.credset", f"target {name} has several credential sets; name one"
            )
        credset = credsets[0]
    if credset not in credsets:
        raise check.fail(f"{g.where}.credset", f"target {name} has no credential set '{credset}'")
    return name, None, credset


def _plan_grants(
    desired: Desired,
    current: Current,
    now: float,
    check: _Checker,
    gone: set[str],
) -> tuple[list[Change], set[int], list[str]]:
    """Grant additions and replacements, the ids of standing grants the file still names."""
    changes: list[Change] = []
    kept: set[int] = set()
    notes: list[str] = []
    for g in desired.grants:
        target, login, credset = _resolve(g, desired, current, check, gone)
        stored = current.targets.get(target)
        same = [
            x
            for x in current.grants
            if stored is not None
            and x.target_id == stored.id
            and x.user_name == g.user
            and x.login == login
            and x.credset == credset
            and x.state is not GrantState.REVOKED
        ]
        last = max(same, key=lambda x: x.id) if same else None
        start = last.not_before if last is not None else now
        if g.until is not None:
            end = g.until
        else:
            assert g.duration is not None  # noqa: S101  the spec has one of them
            end = start + g.duration
        how = f"as {login}" if login else f"credset {credset}"
        subject = f"{g.user} -> {target} {how}"
        details = [f"until {format_time(end)}"]
        if g.options:
            details.append(f"allow {','.join(sorted(g.options))}")
        add = AddGrant(
            "+", "grant", subject, tuple(details), g.user, target, login, credset,
            g.options, start, end, g.reason,
        )  # fmt: skip
        if last is None:
            if end <= now:
                notes.append(f"{g.where} ({subject}) ended {format_time(end)}: not created")
            else:
                changes.append(add)
            continue
        kept.add(last.id)
        if last.not_after == end and last.options == g.options:
            if last.state_at(now) is GrantState.EXPIRED:
                notes.append(
                    f"grant #{last.id} ({subject}) expired {format_time(end)}: not renewed "
                    "(a later until renews it)"
                )
            continue
        if end <= now:
            notes.append(
                f"{g.where} ({subject}) would end {format_time(end)}, in the past: skipped"
            )
            continue
        if last.state_at(now) is not GrantState.EXPIRED:
            changes.append(RevokeGrant("-", "grant", _grant_subject(last), ("replaced",), last.id))
        renewed = "renewed" if last.state_at(now) is GrantState.EXPIRED else "replaces"
        changes.append(
            AddGrant(
                "+",
                "grant",
                subject,
                (*details, f"{renewed} #{last.id}"),
                g.user,
                target,
                login,
                credset,
                g.options,
                start,
                end,
                g.reason,
            )  # fmt: skip
        )
    return changes, kept, notes
