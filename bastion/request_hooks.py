"""How access requests meet the node: notifications, lapsing, and the first-connect clock.

``notification_of`` turns a workflow event into a notification for the sinks.
``run_lapses`` lapses pending requests nobody decided in time, on every node
(a request decided meanwhile is skipped, so nodes never fight over one).
``FirstConnectClock`` is an admission hook: with ``[requests] clock =
"first-connect"`` a grant made from a request starts its duration at the first
connection that uses it, never later than the ceiling set at approval.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bastion.access_requests import approved_scope
from bastion.errors import StoreUnavailable
from bastion.notify import Notification
from bastion.request_flow import RequestEvent
from bastion.session.hooks import ALLOW, AdmissionRequest, Decision, SessionHook

if TYPE_CHECKING:
    from bastion.service import BastionNode

log = logging.getLogger(__name__)

LAPSE_INTERVAL = 5.0
"""Seconds between two passes that lapse undecided requests."""


def notification_of(event: RequestEvent, at: float) -> Notification:
    """The notification sinks' view of a workflow event."""
    r = event.request
    d = event.details()
    return Notification.for_request(
        event.event,
        at,
        event.actor,
        request_id=r.id,
        requester=r.user_name,
        targets=r.targets,
        reason=r.reason,
        decision=event.decision,
        decided_by=event.actor if event.decision else None,
        kind=r.kind.value,
        duration=r.duration,
        state=r.state.value,
        decision_reason=event.reason,
        approvers=list(event.approvers),
        grants=d["grants"],
        not_after=d["not_after"],
        **({"profile": r.profile} if r.profile is not None else {}),
    )


async def run_lapses(node: BastionNode, interval: float = LAPSE_INTERVAL) -> None:
    """Lapse undecided requests until cancelled (a store hiccup is logged and retried)."""
    while True:
        await asyncio.sleep(interval)
        try:
            lapsed = await node.call(node.requests.lapse_due)
        except StoreUnavailable:  # logged once by the store; /healthz says it
            continue
        except Exception:
            log.exception("cannot lapse pending requests; retrying")
            continue
        for r in lapsed:
            log.info("request #%s of %s lapsed undecided", r.id, r.user_name)


class FirstConnectClock(SessionHook):
    """Start a requested grant's duration at its first connection (``clock = "first-connect"``)."""

    name = "first-connect-clock"

    def __init__(self, node: BastionNode) -> None:
        self.node = node

    async def admit(self, request: AdmissionRequest) -> Decision:
        """Shorten the grant to now + its duration the first time it is used."""
        grant = request.grant
        if grant.request_id is None:
            return ALLOW
        node = self.node
        found = await node.call(node.store.get_request, grant.request_id)
        if found is None:
            return ALLOW
        duration = approved_scope(found, found.approvals).duration
        await node.call(node.store.start_grant_clock, grant.id, node.clock(), duration)
        return ALLOW
