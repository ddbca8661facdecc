"""The rules of access requests, as pure functions over stored records.

Who may approve (never the requester, admins included; role approver or admin;
the target's approvers if it names any; N distinct people for N approvals), how
an approver may narrow a request (shorter, fewer targets, fewer options; never
wider), when the clock starts (at approval, or at the requested start if that
is later; never longer than the maximum from then), and how long break-glass
and extensions may be. Nothing here touches the store or the clock; the
workflow (``bastion.request_flow``) applies these rules inside one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.errors import BastionError, UsageError
from bastion.profiles import check_profile_fit
from bastion.requests_config import RequestsConfig
from bastion.store.models import (
    GRANT_OPTIONS,
    AccessRequest,
    Approval,
    Grant,
    Profile,
    RequestKind,
    RequestState,
    Role,
    Target,
    User,
)
from bastion.timeparse import format_duration

APPROVER_ROLES = (Role.APPROVER, Role.ADMIN)


class RequestRefused(BastionError):
    """A request, approval or decision that the rules do not allow; the message says why."""


@dataclass(frozen=True)
class RequestPolicy:
    """What a request for a set of targets needs: the strictest of its targets' policies."""

    approvals: int
    approvers: tuple[str, ...]
    """Names and ``@group``s; empty: any approver or admin."""
    max_duration: float


def policy_for(targets: Sequence[Target], config: RequestsConfig) -> RequestPolicy:
    """The policy of a request for ``targets``: most approvals, shortest maximum.

    Approvers named by several targets must satisfy each of them, so the list is
    the intersection when more than one target names approvers.
    """
    approvals = max([config.approvals, *(t.approvals or 0 for t in targets)])
    default = config.max_duration
    max_duration = min([default, *(t.max_request or default for t in targets)])
    named = [set(t.approvers) for t in targets if t.approvers]
    approvers: set[str] = set.intersection(*named) if named else set()
    return RequestPolicy(approvals, tuple(sorted(approvers)), max_duration)


def policy_for_profile(profile: Profile, config: RequestsConfig) -> RequestPolicy:
    """The policy of a request naming ``profile``: its own, like one target's.

    The profile may ask for more approvals and a shorter maximum than ``[requests]``,
    never fewer or longer, and its approvers decide. The per-target policies of
    the targets it reaches do not apply: what it reaches changes with labels after
    approval, so the profile is the thing approved (``docs/decisions.md``).
    """
    approvals = max(config.approvals, profile.approvals or 0)
    default = config.max_duration
    max_duration = min(default, profile.max_duration or default)
    return RequestPolicy(approvals, tuple(sorted(set(profile.approvers))), max_duration)


def check_profile_request(
    *,
    profile: Profile,
    duration: float,
    options: frozenset[str],
    login: str | None,
    policy: RequestPolicy,
) -> None:
    """Refuse a request for ``profile`` the rules would never approve (raises RequestRefused).

    Options and login must be within the profile's: a grant under it could not
    carry more (``profiles.check_profile_fit``).
    """
    if duration <= 0:
        raise RequestRefused("--for must be a positive duration, e.g. 2h")
    if duration > policy.max_duration:
        raise RequestRefused(
            f"at most {format_duration(policy.max_duration)} can be requested under "
            f"profile {profile.name}; ask for less"
        )
    try:
        check_profile_fit(profile, login, options)
    except UsageError as e:
        raise RequestRefused(str(e)) from e


def check_new_request(
    *,
    targets: Sequence[Target],
    duration: float,
    options: frozenset[str],
    login: str | None,
    policy: RequestPolicy,
    kind: RequestKind,
    config: RequestsConfig,
) -> None:
    """Refuse a request the rules would never approve (raises RequestRefused)."""
    if not targets:
        raise RequestRefused("name at least one target")
    unknown = options - GRANT_OPTIONS
    if unknown:
        raise RequestRefused(
            f"unknown option(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(sorted(GRANT_OPTIONS))}"
        )
    if duration <= 0:
        raise RequestRefused("--for must be a positive duration, e.g. 2h")
    cap = config.break_glass_max if kind is RequestKind.BREAK_GLASS else policy.max_duration
    if duration > cap and kind is not RequestKind.BREAK_GLASS:
        raise RequestRefused(
            f"at most {format_duration(cap)} can be requested for "
            f"{', '.join(t.name for t in targets)}; ask for less"
        )
    if login is not None:
        for t in targets:
            if t.logins and login not in t.logins:
                raise RequestRefused(
                    f"{t.name} has no login '{login}' (it has: {', '.join(t.logins)})"
                )


def approver_allowed(
    approver: User, groups: Sequence[str], request: AccessRequest, policy: RequestPolicy
) -> None:
    """Refuse (RequestRefused) unless ``approver`` may approve or deny ``request`` now."""
    if request.state is not RequestState.PENDING:
        raise RequestRefused(f"request #{request.id} is {request.state.value}, not pending")
    if approver.name == request.user_name:
        raise RequestRefused("nobody approves their own request, admins included")
    if approver.role not in APPROVER_ROLES:
        raise RequestRefused(
            f"{approver.name} is not an approver (role {approver.role.value}); "
            "approvers have role approver or admin"
        )
    if approver.disabled:
        raise RequestRefused(f"{approver.name} is disabled")
    if policy.approvers and not (
        approver.name in policy.approvers or any(f"@{g}" in policy.approvers for g in groups)
    ):
        raise RequestRefused(
            f"request #{request.id} needs an approver from: {', '.join(policy.approvers)}"
        )
    if any(a.approver == approver.name for a in request.approvals):
        raise RequestRefused(f"{approver.name} already approved request #{request.id}")


def narrowed(
    request: AccessRequest,
    *,
    duration: float | None,
    targets: Sequence[str] | None,
    options: frozenset[str] | None,
) -> None:
    """Refuse (RequestRefused) an approval that would widen the request.

    A request for a profile is approved whole or not at all as to targets: it
    names no targets to drop (shorten it, remove options, or deny it).
    """
    if targets is not None and request.profile is not None:
        raise RequestRefused(
            f"request #{request.id} is for profile {request.profile}, not for targets: "
            "approve it without --targets (shorten it, remove options, or deny it)"
        )
    if duration is not None and (duration <= 0 or duration > request.duration):
        raise RequestRefused(
            f"an approval may shorten request #{request.id} "
            f"(asked: {format_duration(request.duration)}), never lengthen it"
        )
    if targets is not None:
        extra = set(targets) - set(request.targets)
        if extra or not targets:
            added = ", ".join(sorted(extra)) or "none left"
            raise RequestRefused(
                f"an approval may drop targets of request #{request.id} "
                f"({', '.join(request.targets)}), never add ({added})"
            )
    if options is not None and not options <= request.options:
        extra_opts = sorted(options - request.options)
        raise RequestRefused(
            f"an approval may remove options of request #{request.id}, never add "
            f"({', '.join(extra_opts)})"
        )


@dataclass(frozen=True)
class Scope:
    """What a request grants once approved: the narrowest of all approvals."""

    duration: float
    targets: tuple[str, ...]
    options: frozenset[str]


def approved_scope(request: AccessRequest, approvals: Sequence[Approval]) -> Scope:
    """Intersect the request with every approver's narrowing."""
    duration = min([request.duration, *(a.duration for a in approvals if a.duration)])
    targets = [t for t in request.targets]
    options = set(request.options)
    for a in approvals:
        if a.targets is not None:
            targets = [t for t in targets if t in a.targets]
        if a.options is not None:
            options &= a.options
    return Scope(duration, tuple(targets), frozenset(options))


def distinct_approvers(approvals: Sequence[Approval]) -> int:
    """How many different people approved."""
    return len({a.approver for a in approvals})


def grant_window(
    request: AccessRequest, approved_at: float, duration: float, policy: RequestPolicy,
    config: RequestsConfig,
) -> tuple[float, float]:  # fmt: skip
    """``(not_before, not_after)`` of the grants an approval makes.

    The clock starts at approval, or at the requested start if later, and never
    runs past ``max_duration`` from then. With ``clock = "first-connect"`` the
    grant is usable from approval but ends at the ceiling; the first connection
    then shortens it to that moment plus the duration (``request_flow``).
    """
    start = max(approved_at, request.start_at or approved_at)
    length = min(duration, policy.max_duration)
    if request.kind is RequestKind.BREAK_GLASS:
        length = min(duration, config.break_glass_max)
        return start, start + length
    if config.clock == "first-connect":
        return start, start + max(length, config.first_connect_ceiling)
    return start, start + length


def extended_end(grant: Grant, duration: float, approved_at: float, policy: RequestPolicy) -> float:
    """The new end of an extended grant: later by ``duration``, at most the maximum from now."""
    base = max(grant.not_after, approved_at)
    return min(base + duration, approved_at + policy.max_duration)


def who_can_approve(policy: RequestPolicy, candidates: Sequence[User], requester: str,
                    groups_of: dict[str, tuple[str, ...]]) -> list[str]:  # fmt: skip
    """Names of the users who could approve a request under ``policy`` (for the requester)."""
    names = []
    for u in candidates:
        if u.name == requester or u.role not in APPROVER_ROLES or u.disabled:
            continue
        groups = groups_of.get(u.name, ())
        if policy.approvers and not (
            u.name in policy.approvers or any(f"@{g}" in policy.approvers for g in groups)
        ):
            continue
        names.append(u.name)
    return sorted(names)
