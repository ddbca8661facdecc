"""Effective access: what can a user reach now and exactly why; who can reach a target now.

Why not read the grants table and guess: the answer must be the node's own. Every
verdict here comes from the code a connection goes through: ``login_refusal`` (the
first check of every SSH login: engagement ended, disabled, locked, no TOTP) and
``find_access`` (target, the user's grants for it, the pick, with the same
refusal words) once for each login or credential set a usable grant names, and
once with none (the ``USER%TARGET`` a contractor types). A profile grant comes
the way admission sees it: ``Store.list_grants(target_id=...)`` fills it in for
every live target whose labels its profile's selector matches at that moment, so
a target labelled later is listed and one whose label went is not. A grant that has not
started, a revoked or expired one, a removed target, a disabled or ended user
all read exactly as the node would refuse them. What admission hooks decide per
session (none of the stock ones refuses) is outside this answer.

Blocking (store calls), like ``find_access``: the node runs it in a worker thread.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from bastion.access_report import GrantWhy, TargetAccess, UserAccess, Way
from bastion.engagements import user_state
from bastion.errors import NotFound
from bastion.grants import is_usable, why_not
from bastion.session.admission import Refused, find_access, login_refusal
from bastion.store import Store
from bastion.store.models import (
    AccessRequest,
    Grant,
    GrantState,
    RequestState,
    Target,
    TargetKind,
    User,
)

__all__ = ["grant_state", "target_access", "user_access", "who_can_reach"]

_CURRENT = (GrantState.ACTIVE, GrantState.PENDING)
"""Grant states listed without ``--all`` (ACTIVE includes not yet started)."""


def grant_state(grant: Grant, now: float) -> str:
    """``usable``, ``not-started``, ``pending``, ``expired`` or ``revoked`` at ``now``."""
    if is_usable(grant, now):
        return "usable"
    state = grant.state_at(now)
    if state is GrantState.ACTIVE:
        return "not-started"
    return state.value


def _protocol(target: Target) -> str:
    return "postgres" if target.kind is TargetKind.POSTGRES else "ssh"


@dataclass
class _Lookups:
    """Requests and profiles read once per report, not once per grant."""

    store: Store
    requests: dict[int, AccessRequest | None] = field(default_factory=dict)
    selectors: dict[int, str | None] = field(default_factory=dict)

    def request(self, request_id: int | None) -> AccessRequest | None:
        if request_id is None:
            return None
        if request_id not in self.requests:
            self.requests[request_id] = self.store.get_request(request_id)
        return self.requests[request_id]

    def selector(self, profile_id: int | None) -> str | None:
        if profile_id is None:
            return None
        if profile_id not in self.selectors:
            found = self.store.get_profile_by_id(profile_id)
            self.selectors[profile_id] = found.selector if found is not None else None
        return self.selectors[profile_id]


def _why(grant: Grant, now: float, look: _Lookups) -> GrantWhy:
    found = look.request(grant.request_id)
    usable = is_usable(grant, now)
    return GrantWhy(
        id=grant.id,
        profile=grant.profile_name,
        selector=look.selector(grant.profile_id),
        request=grant.request_id,
        request_kind=found.kind.value if found is not None else None,
        login=grant.login,
        credset=grant.credset,
        options=tuple(sorted(grant.options)),
        not_before=grant.not_before,
        not_after=grant.not_after,
        state=grant_state(grant, now),
        why_not="" if usable else why_not(grant, now),
        reason=grant.reason,
        approved_by=grant.approved_by,
    )


def target_access(
    store: Store,
    user: User,
    target: Target,
    now: float,
    *,
    grants: list[Grant] | None = None,
    include_all: bool = False,
    look: _Lookups | None = None,
) -> TargetAccess | None:
    """``user`` on the live ``target`` at ``now``; None when there is nothing to say
    (no grant at all, or with ``include_all`` False no grant that is current)."""
    if grants is None:
        grants = store.list_grants(user_id=user.id, target_id=target.id)
    shown = grants if include_all else [g for g in grants if g.state_at(now) in _CURRENT]
    if not shown:
        return None
    protocol = _protocol(target)
    ways: dict[str | None, Way] = {}
    refusal = ""
    asks: list[str | None] = [None]
    for g in grants:
        name = g.credset if protocol == "postgres" else g.login
        if is_usable(g, now) and name not in asks:
            asks.append(name)
    for ask in asks:
        try:
            access = find_access(
                store, user=user, target_name=target.name, protocol=protocol, now=now, login=ask
            )
        except Refused as e:
            if ask is None:
                refusal = e.message
            continue
        if access.login is None and protocol == "ssh":
            if ask is None:
                refusal = f"target {target.name} has no login configured"
            continue
        ways.setdefault(access.login, Way(access.login, access.grant.id, access.grant.not_after))
    blocked: list[str] = []
    refused = login_refusal(user, now)
    if refused is not None:
        blocked.append(refused[1])
    if not ways:
        blocked.append(refusal or f"no usable grant for {target.name}")
    look = look or _Lookups(store)
    return TargetAccess(
        target=target.name,
        kind=target.kind.value,
        removed=False,
        labels=dict(target.labels),
        reachable=bool(ways) and refused is None,
        ways=tuple(ways[k] for k in sorted(ways, key=lambda k: k or "")),
        blocked=tuple(blocked),
        grants=tuple(_why(g, now, look) for g in shown),
    )


def _removed(
    store: Store, user: User, now: float, live_ids: set[int], look: _Lookups
) -> list[TargetAccess]:
    """Targets that were removed, for ``--all``: their grants are history, nothing is reachable.

    (Profile grants name no target as stored: what they reach is only ever "now".)
    """
    by_target: dict[int, list[Grant]] = defaultdict(list)
    for g in store.list_grants(user_id=user.id):
        if g.target_id is not None and g.target_id not in live_ids:
            by_target[g.target_id].append(g)
    out = []
    for target_id, grants in by_target.items():
        target = store.get_target_by_id(target_id)
        name = target.name if target is not None else str(grants[0].target_name)
        out.append(
            TargetAccess(
                target=name,
                kind=target.kind.value if target is not None else "ssh",
                removed=True,
                labels=dict(target.labels) if target is not None else {},
                reachable=False,
                ways=(),
                blocked=(f"target {name} was removed",),
                grants=tuple(_why(g, now, look) for g in grants),
            )
        )
    return sorted(out, key=lambda t: t.target)


def _user(store: Store, name: str) -> User:
    user = store.get_user(name)
    if user is None:
        raise NotFound(f"no user named '{name}'; see 'bastion user list'")
    return user


def _report(store: Store, user: User, now: float, targets: list[TargetAccess]) -> UserAccess:
    refused = login_refusal(user, now)
    pending = store.list_requests(user_id=user.id, state=RequestState.PENDING)
    return UserAccess(
        user=user.name,
        role=user.role.value,
        state=user_state(user, now),
        sponsor=user.sponsor,
        engagement_until=user.engagement_until,
        login_refused=refused[1] if refused is not None else None,
        at=now,
        targets=tuple(targets),
        pending_requests=tuple(sorted(r.id for r in pending)),
    )


def user_access(store: Store, name: str, now: float, *, include_all: bool = False) -> UserAccess:
    """Every target user ``name`` holds a current grant for (``include_all``: any grant,
    and removed targets), each with how or why not. Raises NotFound."""
    user = _user(store, name)
    live = store.list_targets()
    look = _Lookups(store)
    found = [
        t
        for target in live
        if (t := target_access(store, user, target, now, include_all=include_all, look=look))
        is not None
    ]
    if include_all:
        found += _removed(store, user, now, {t.id for t in live}, look)
    return _report(store, user, now, found)


def who_can_reach(
    store: Store, target_name: str, now: float, *, include_all: bool = False
) -> list[UserAccess]:
    """Every user with a current grant on ``target_name`` (``include_all``: any grant),
    each report holding that one target; reachable users first. Raises NotFound."""
    target = store.get_target(target_name)
    if target is None:
        raise NotFound(f"no target named '{target_name}'; see 'bastion target list'")
    out = []
    look = _Lookups(store)
    for user in store.list_users():
        t = target_access(store, user, target, now, include_all=include_all, look=look)
        if t is not None:
            out.append(_report(store, user, now, [t]))
    return sorted(out, key=lambda a: (not a.targets[0].reachable, a.user))
