"""Access requests as the control API shows them: the request, who may still approve, its history.

Why the history is rebuilt from the request row and not read from the audit log:
the row holds every step (creation, each approval, the decision, the review) with
its time, actor and reason, and it is one store read; the audit log stays the
record of *how* each step was made (door, uid, node).

``list_requests`` is blocking like the store: the server runs it through
``BastionNode.call``.
"""

from __future__ import annotations

from bastion.access_requests import (
    RequestRefused,
    approver_allowed,
    distinct_approvers,
    policy_for,
)
from bastion.control.messages import ApprovalInfo, HistoryEntry, RequestInfo
from bastion.request_flow import RequestFlow
from bastion.store.models import AccessRequest, RequestKind, RequestState, User
from bastion.timeparse import format_duration

__all__ = ["history_of", "list_requests", "may_watch_held", "request_info", "request_of"]


def _asked(r: AccessRequest) -> str:
    if r.held is not None:
        return f"ran {r.held.kind} {r.held.text!r}, held for approval: {r.reason}"
    names = f"profile {r.profile}" if r.profile is not None else ",".join(r.targets)
    if r.kind is RequestKind.EXTEND:
        return f"asked to extend grant #{r.extends_grant_id} by {format_duration(r.duration)}"
    what = "broke glass on" if r.kind is RequestKind.BREAK_GLASS else "asked for"
    extra = f" as {r.login}" if r.login else ""
    if r.options:
        extra += f" with {','.join(sorted(r.options))}"
    return f"{what} {names}{extra} for {format_duration(r.duration)}: {r.reason}"


def history_of(r: AccessRequest) -> tuple[HistoryEntry, ...]:
    """Every step of ``r`` in time order, one line each."""
    steps = [HistoryEntry(r.created_at, r.user_name, _asked(r))]
    for a in r.approvals:
        what = "approved"
        if a.duration is not None:
            what += f" for {format_duration(a.duration)}"
        if a.targets is not None:
            what += f" on {','.join(a.targets)} only"
        if a.options is not None:
            what += f" with {','.join(sorted(a.options)) or 'no options'}"
        steps.append(HistoryEntry(a.at, a.approver, what + (f": {a.reason}" if a.reason else "")))
    if r.decided_at is not None and r.kind is not RequestKind.BREAK_GLASS:
        if r.state is RequestState.APPROVED:
            grants = ", ".join(f"#{g}" for g in r.grant_ids)
            what = f"approved: grant {grants}" if grants else "approved"
        else:
            what = r.state.value + (f": {r.decision_reason}" if r.decision_reason else "")
        steps.append(HistoryEntry(r.decided_at, r.decided_by or "bastion", what))
    if r.reviewed_at is not None:
        steps.append(
            HistoryEntry(r.reviewed_at, r.reviewed_by or "?", f"reviewed: {r.review_note or ''}")
        )
    return tuple(sorted(steps, key=lambda h: h.at))


def request_info(
    r: AccessRequest,
    *,
    approvers: tuple[str, ...],
    needed: int,
    reaches: tuple[str, ...] = (),
) -> RequestInfo:
    """``r`` on the wire, with who may still approve it and how many approvals it lacks
    (and for a profile request, what the profile reaches now)."""
    return RequestInfo(
        id=r.id,
        kind=r.kind.value,
        requester=r.user_name,
        targets=tuple(r.targets),
        login=r.login,
        options=tuple(sorted(r.options)),
        duration=r.duration,
        start_at=r.start_at,
        reason=r.reason,
        state=r.state.value,
        created_at=r.created_at,
        lapses_at=r.lapses_at,
        extends_grant=r.extends_grant_id,
        decided_at=r.decided_at,
        decided_by=r.decided_by,
        decision_reason=r.decision_reason,
        approvals=tuple(
            ApprovalInfo(a.approver, a.at, a.duration, a.targets, a.reason) for a in r.approvals
        ),
        grants=tuple(r.grant_ids),
        needed=needed,
        approvers=approvers,
        history=history_of(r),
        held=r.held.text if r.held else None,
        held_kind=r.held.kind if r.held else None,
        session_id=r.held.session_id if r.held else None,
        rule=r.held.rule if r.held else None,
        profile=r.profile,
        reaches=reaches,
    )


def request_of(flow: RequestFlow, r: AccessRequest) -> RequestInfo:
    """``request_info`` with the policy looked up: pending ones get who may still approve
    (not those who already did) and how many approvals are missing."""
    reaches = flow.reach_of(r)
    if r.state is not RequestState.PENDING:
        return request_info(r, approvers=(), needed=0, reaches=reaches)
    policy = flow.policy_of(r)
    needed = max(0, policy.approvals - distinct_approvers(r.approvals))
    done = {a.approver for a in r.approvals}
    still = tuple(name for name in flow.approvers_for(r) if name not in done)
    return request_info(r, approvers=still, needed=needed, reaches=reaches)


def list_requests(flow: RequestFlow, *, pending_only: bool, limit: int) -> list[RequestInfo]:
    """Pending requests (oldest first: the longest waiting on top), then unless
    ``pending_only`` the ``limit`` most recent decided ones, newest first."""
    store = flow.store
    pending = store.list_requests(state=RequestState.PENDING, limit=limit)
    shown = list(reversed(pending))
    if not pending_only:
        recent = store.list_requests(limit=limit)
        shown += [r for r in recent if r.state is not RequestState.PENDING]
    return [request_of(flow, r) for r in shown]


def may_watch_held(flow: RequestFlow, approver: User, session_id: str) -> bool:
    """An approver may watch a session whose held command they may decide now: seeing
    the live screen is part of deciding (the control API lets approvers do no more)."""
    store = flow.store
    groups = store.user_groups(approver.id)
    for r in store.list_requests(state=RequestState.PENDING):
        if r.held is None or r.held.session_id != session_id:
            continue
        targets = [t for name in r.targets if (t := store.get_target(name)) is not None]
        try:
            approver_allowed(approver, groups, r, policy_for(targets, flow.config))
        except RequestRefused:
            continue
        return True
    return False
