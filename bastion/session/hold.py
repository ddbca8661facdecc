"""Holding a command for approval: the session core waits on the requests inbox.

A ``hold`` verdict (a guardrail rule with ``--action hold``) decides nothing by
itself. The core stores a request of kind ``command`` (``RequestFlow.hold``:
the same approver rules as access requests), tells the contractor who can
approve it, and waits until an approver decides over SSH, the CLI or the
console, on any node. The store is the truth: the wait reads the request row
every ``HoldWaits.poll`` seconds and wakes at once when this node announces a
decision on it, or when the session ends. At ``[policy] hold_timeout`` the
request lapses and the command is denied; if the session ends first, the
request is dropped. The wait is a coroutine, so every other session goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from bastion import audit_actions as actions
from bastion.session.hooks import Decision
from bastion.store.models import AccessRequest, HeldCommand, RequestState
from bastion.timeparse import format_duration

if TYPE_CHECKING:
    from bastion.session.core import Session

log = logging.getLogger(__name__)

HOLD_POLL = 0.5
"""Seconds between two reads of a held command's request (decisions made on other nodes)."""
DROPPED_REASON = "the session ended while the command was held"


class HoldWaits:
    """The held commands this node waits on, so a decision announced here wakes its wait."""

    def __init__(self, poll: float = HOLD_POLL) -> None:
        self.poll = poll
        self._events: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    def watch(self, request_id: int) -> asyncio.Event:
        """The event set when ``request_id`` is decided on this node (call in the loop)."""
        event = asyncio.Event()
        self._events[request_id] = (asyncio.get_running_loop(), event)
        return event

    def forget(self, request_id: int) -> None:
        """The wait is over."""
        self._events.pop(request_id, None)

    def wake(self, request_id: int) -> None:
        """A decision on ``request_id`` was announced (from any thread)."""
        found = self._events.get(request_id)
        if found is not None:
            loop, event = found
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(event.set)

    def __len__(self) -> int:
        return len(self._events)


async def wait_for_approval(session: Session, kind: str, text: str, decision: Decision) -> bool:
    """Hold ``text`` until approved (True), or denied, lapsed or dropped (False)."""
    node = session.node
    flow = node.requests
    timeout = node.config.policy.hold_timeout
    rule = f"rule {decision.rule}" if decision.rule else "a hold rule"
    try:
        out = await node.call(
            flow.hold,
            session.user,
            target=session.target.name,
            login=session.login,
            held=HeldCommand(kind, text, session.id, decision.rule),
            reason=decision.reason or rule,
            timeout=timeout,
            client_addr=session.client_addr,
        )
    except Exception:  # fail closed: no request, no approval, no command
        log.exception("cannot store the held %s of session %s", kind, session.id)
        session.adapter.tell(
            f"denied ({rule}): it needs approval, and the request could not be stored; "
            "try again later or ask an admin"
        )
        _audit(session, actions.POLICY_HOLD_DENIED, kind, text, None, outcome="unstorable")
        return False
    request = out.request
    if not out.approvers:
        why = "nobody can approve it"
        request = await node.call(flow.settle, request.id, RequestState.DROPPED, why)
        session.adapter.tell(
            f"denied ({rule}): held for approval, but nobody can approve it; "
            "ask an admin to add an approver (bastion user add NAME --role approver)"
        )
        _audit(
            session, actions.POLICY_HOLD_DENIED, kind, text, request, outcome="unapprovable",
            approver=None,
        )  # fmt: skip
        return False
    session.mark(f"hold: request #{request.id} pending")
    needed = f" ({out.needed} distinct approvals needed)" if out.needed > 1 else ""
    session.adapter.tell(
        f"held for approval ({rule}): request #{request.id}; can approve: "
        f"{', '.join(out.approvers)}{needed} (ssh APPROVER@BASTION approve {request.id}); "
        f"denied if nobody approves within {format_duration(timeout)}"
    )
    try:
        final = await _wait(session, request, timeout)
    except asyncio.CancelledError:  # the adapter gave up on the command: drop it
        node.spawn(_drop_later(session, kind, text, request.id))
        raise
    return _outcome(session, kind, text, final, timeout)


async def _wait(session: Session, request: AccessRequest, hold_timeout: float) -> AccessRequest:
    """Until the stored request is decided, lapses, or the session ends."""
    node, rid = session.node, request.id
    flow, waits = node.requests, node.hold_waits
    wake = waits.watch(rid)
    session.holding = wake
    try:
        while True:
            if session.ending:
                return await node.call(flow.settle, rid, RequestState.DROPPED, DROPPED_REASON)
            wake.clear()
            current = await node.call(node.store.get_request, rid)
            if current is None or current.state is not RequestState.PENDING:
                return current or request
            left = current.lapses_at - node.clock()
            if left <= 0:
                why = f"nobody approved it within {format_duration(hold_timeout)}"
                return await node.call(flow.settle, rid, RequestState.LAPSED, why)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(waits.poll, left))
    finally:
        session.holding = None
        waits.forget(rid)


def _outcome(
    session: Session, kind: str, text: str, request: AccessRequest, timeout: float
) -> bool:
    """Tell the contractor, mark, audit; True if the command may run now."""
    rid, by = request.id, request.decided_by
    if request.state is RequestState.APPROVED and not session.ending:
        session.mark(f"hold: request #{rid} approved by {by}")
        session.adapter.tell(f"request #{rid} approved by {by}: running it now")
        _audit(session, actions.POLICY_HOLD_APPROVED, kind, text, request, approver=by)
        return True
    if request.state is RequestState.DROPPED or session.ending:
        _audit(session, actions.POLICY_HOLD_DROPPED, kind, text, request)
        if not session.ending:  # dropped from elsewhere (the engagement ended, ...)
            session.adapter.tell(f"denied: request #{rid} was dropped ({request.decision_reason})")
        return False
    if request.state is RequestState.LAPSED:
        session.mark(f"hold: request #{rid} lapsed")
        session.adapter.tell(
            f"denied: nobody approved request #{rid} within {format_duration(timeout)}"
        )
        _audit(
            session, actions.POLICY_HOLD_DENIED, kind, text, request, outcome="lapsed",
            approver=None,
        )  # fmt: skip
        return False
    session.mark(f"hold: request #{rid} denied by {by}")
    session.adapter.tell(f"denied by {by}: {request.decision_reason or 'no reason given'}")
    _audit(session, actions.POLICY_HOLD_DENIED, kind, text, request, outcome="denied", approver=by)
    return False


async def _drop_later(session: Session, kind: str, text: str, request_id: int) -> None:
    node = session.node
    settle = node.requests.settle
    request = await node.call(settle, request_id, RequestState.DROPPED, DROPPED_REASON)
    if request.state is RequestState.DROPPED:
        _audit(session, actions.POLICY_HOLD_DROPPED, kind, text, request)


def _audit(
    session: Session,
    action: str,
    kind: str,
    text: str,
    request: AccessRequest | None,
    **details: object,
) -> None:
    node = session.node
    node.spawn(
        node.audit(
            session.user.name,
            action,
            session.target.name,
            session=session.id,
            kind=kind,
            text=text,
            request=request.id if request else None,
            rule=request.held.rule if request and request.held else None,
            reason=request.decision_reason if request else None,
            state=request.state.value if request else None,
            **details,
        )
    )
