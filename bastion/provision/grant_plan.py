"""Standing grants in the plan: which to create, replace, keep, or leave expired.

A standing grant is one ``apply`` created (``requested_by = "apply"``); grants
made by hand or by access requests are never matched or touched. It is
identified by (user, target or profile, login or credential set), defaults
filled in as ``bastion grant add`` fills them. Its end is ``until``, or ``for``
after it was first created, so re-applying never moves it. A standing grant that
has expired is *not* renewed by re-applying the same file (a "standing" grant
would otherwise never end); the plan notes it, and a later ``until`` or a longer
``for`` renews it. A change of ``allow`` or an earlier end replaces the grant
(the old one is revoked; its live sessions end), keeping its start.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.grants import format_time
from bastion.provision.changes import AddGrant, Change, Checker, Current, RevokeGrant
from bastion.provision.spec import Desired, GrantSpec
from bastion.store.models import Grant, GrantState, TargetKind
from bastion.timeparse import format_duration


@dataclass(frozen=True)
class Resolved:
    """A grant of the file with its defaults filled in: what it is in the store's terms."""

    user: str
    target: str | None
    profile: str | None
    login: str | None
    credset: str | None
    options: frozenset[str]
    max_duration: float | None = None
    """The profile's longest grant (None: no cap)."""

    @property
    def subject(self) -> str:
        """``ann -> web1 as deploy``, ``raj -> profile prod-db credset ro``."""
        where = self.target if self.target is not None else f"profile {self.profile}"
        how = (
            f" as {self.login}"
            if self.login
            else f" credset {self.credset}"
            if self.credset
            else ""
        )
        return f"{self.user} -> {where}{how}"

    def matches(self, g: Grant, current: Current) -> bool:
        """Is the stored standing grant ``g`` this one (any state but revoked)?"""
        if g.state is GrantState.REVOKED or g.user_name != self.user:
            return False
        if (g.login, g.credset) != (self.login, self.credset):
            return False
        if self.target is not None:
            stored = current.targets.get(self.target)
            return stored is not None and g.target_id == stored.id and g.profile_id is None
        profile = current.profiles.get(self.profile or "")
        return profile is not None and g.profile_id == profile.id


def grant_subject(g: Grant) -> str:
    """A stored grant as the plan names it: ``#12 ann -> web1 as deploy``."""
    where = g.target_name if g.target_name is not None else f"profile {g.profile_name}"
    return f"#{g.id} {g.user_name} -> {where}{_how(g.login, g.credset)}"


def _how(login: str | None, credset: str | None) -> str:
    return f" as {login}" if login else f" credset {credset}" if credset else ""


def resolve(
    g: GrantSpec, desired: Desired, current: Current, check: Checker, gone: set[str]
) -> Resolved:
    """Fill in a grant's defaults and check it against the file and the store.

    ``gone`` names the targets (and ``profile NAME``s) that --prune removes.
    Raises SpecError naming the grant's table and key.
    """
    if g.user not in desired.users and g.user not in current.users:
        raise check.fail(f"{g.where}.user", f"no user named '{g.user}' in the file or the store")
    if g.profile is not None:
        return _resolve_profile(g, desired, current, check, gone)
    return _resolve_target(g, desired, current, check, gone)


def _resolve_target(
    g: GrantSpec, desired: Desired, current: Current, check: Checker, gone: set[str]
) -> Resolved:
    """A target grant: the login defaults to the target's first, the credset to its only one."""
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
        return Resolved(g.user, name, None, login, None, g.options)
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
    return Resolved(g.user, name, None, None, credset, frozenset())


def _resolve_profile(
    g: GrantSpec, desired: Desired, current: Current, check: Checker, gone: set[str]
) -> Resolved:
    """A profile grant: login, credential set and options default to the profile's."""
    name = g.profile or ""
    spec = desired.profiles.get(name)
    stored = current.profiles.get(name)
    if spec is None and stored is None:
        raise check.fail(
            f"{g.where}.profile", f"no profile named '{name}' in the file or the store"
        )
    if spec is None and f"profile {name}" in gone:
        raise check.fail(
            f"{g.where}.profile", f"profile {name} is not in the file, so --prune removes it"
        )
    source = spec if spec is not None else stored
    assert source is not None  # noqa: S101  one of them exists
    if g.login is not None and source.logins and g.login not in source.logins:
        raise check.fail(
            f"{g.where}.login",
            f"profile {name} allows the logins {', '.join(source.logins)}, not '{g.login}'",
        )
    extra = g.options - source.options
    if extra:
        raise check.fail(
            f"{g.where}.allow",
            f"profile {name} does not allow {', '.join(sorted(extra))} "
            f"(it allows: {', '.join(sorted(source.options)) or 'nothing extra'})",
        )
    credset = g.credset if g.credset is not None else source.credset
    options = g.options or source.options
    return Resolved(g.user, None, name, g.login, credset, options, source.max_duration)


def plan_grants(
    desired: Desired, current: Current, now: float, check: Checker, gone: set[str]
) -> tuple[list[Change], set[int], list[str]]:
    """Grant additions and replacements, the ids of standing grants the file still
    names (kept), and notes (expired grants not renewed)."""
    changes: list[Change] = []
    kept: set[int] = set()
    notes: list[str] = []
    for g in desired.grants:
        r = resolve(g, desired, current, check, gone)
        same = [x for x in current.grants if r.matches(x, current)]
        last = max(same, key=lambda x: x.id) if same else None
        start = last.not_before if last is not None else now
        end = g.until if g.until is not None else start + (g.duration or 0.0)
        details = [f"until {format_time(end)}"]
        if r.options:
            details.append(f"allow {','.join(sorted(r.options))}")
        if last is not None:
            kept.add(last.id)
            if last.not_after == end and last.options == r.options:
                if last.state_at(now) is GrantState.EXPIRED:
                    notes.append(
                        f"grant #{last.id} ({r.subject}) expired {format_time(end)}: not renewed "
                        "(a later until renews it)"
                    )
                continue
        if r.max_duration is not None and end - start > r.max_duration + 1e-6:
            key = "for" if g.duration is not None else "until"
            raise check.fail(
                f"{g.where}.{key}",
                f"profile {r.profile} allows at most {format_duration(r.max_duration)} per "
                f"grant; this one lasts {format_duration(end - start)}",
            )
        if end <= now:
            notes.append(f"{g.where} ({r.subject}) ends {format_time(end)}, in the past: skipped")
            continue
        if last is not None:
            expired = last.state_at(now) is GrantState.EXPIRED
            if not expired:
                changes.append(
                    RevokeGrant("-", "grant", grant_subject(last), ("replaced",), last.id)
                )
            details.append(f"{'renews' if expired else 'replaces'} #{last.id}")
        changes.append(
            AddGrant(
                "+",
                "grant",
                r.subject,
                tuple(details),
                user=r.user,
                target=r.target,
                profile=r.profile,
                login=r.login,
                credset=r.credset,
                options=r.options,
                not_before=start,
                not_after=end,
                reason=g.reason,
            )  # fmt: skip
        )
    return changes, kept, notes
