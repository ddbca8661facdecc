"""Every termination cause racing the session's own end: exactly one end, for one reason.

For each cause, both orders: the cause first, then the client closes (the row
says the cause); the client closes first, then the cause arrives before the
final row (the row says client-closed and the adapter is never told to close).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from bastion.session.core import Session
from bastion.session.drain import drain_sessions
from bastion.session.hooks import Decision, SessionHook, Verdict
from bastion.session.reasons import EndReason
from bastion.store.models import GrantState
from tests.bastion.session.kit import Kit

pytestmark = pytest.mark.timeout(60)

Fire = Callable[[Kit, Session], Awaitable["asyncio.Task[int] | None"]]


class Terminator(SessionHook):
    name = "terminator"

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        return Decision(Verdict.TERMINATE, "no rm -rf", rule="r1")


async def _admin(kit: Kit, s: Session) -> None:
    kit.node.live.apply_terminations({s.id: ("root", "audit finding")})


async def _revoked(kit: Kit, s: Session) -> None:
    kit.node.live.apply({kit.grant.id: (GrantState.REVOKED, kit.grant.not_after)})


async def _removed(kit: Kit, s: Session) -> None:
    kit.node.live.apply({})


async def _grant_ended(kit: Kit, s: Session) -> None:
    assert s.live is not None
    kit.clock.now = kit.grant.not_after
    kit.node.live.apply_one(s.live)


async def _idle(kit: Kit, s: Session) -> None:
    assert s.live is not None and kit.node.live.idle_timeout > 0
    kit.clock.now = s.live.last_input + kit.node.live.idle_timeout
    kit.node.live.apply_one(s.live)


async def _node_stop(kit: Kit, s: Session) -> asyncio.Task[int]:
    drain = asyncio.ensure_future(drain_sessions(kit.node, 0, asyncio.Event()))
    await asyncio.sleep(0)  # the drain has ended every session and waits for the rows
    assert kit.node.stopping and not drain.done()
    return drain


async def _recording_failed(kit: Kit, s: Session) -> None:
    s.recording_failed("disk full")


async def _policy(kit: Kit, s: Session) -> None:
    kit.node.hooks.register(Terminator())
    assert await s.judge("command", "rm -rf /", "exact") is False


@dataclass(frozen=True)
class Cause:
    reason: str
    fire: Fire
    message: str

    def __str__(self) -> str:
        return self.reason


CAUSES = [
    Cause("admin-terminated", _admin, "terminated by root: audit finding"),
    Cause("grant-revoked", _revoked, "was revoked"),
    Cause("grant-removed", _removed, "no longer exists"),
    Cause("grant-ended", _grant_ended, "ended at"),
    Cause("idle-timeout", _idle, "no input for 900 seconds"),
    Cause("node-stop", _node_stop, "this node is stopping for maintenance"),
    Cause("recording-failed", _recording_failed, "could not be written"),
    Cause("policy", _policy, "denied (rule r1): no rm -rf"),
]


@pytest.mark.parametrize("cause", CAUSES, ids=str)
async def test_cause_first_then_the_client_closes(kit: Kit, cause: Cause) -> None:
    s, adapter = await kit.live_session()
    drain = await cause.fire(kit, s)
    assert [r for r, _ in adapter.closes] == [cause.reason]
    assert cause.message in adapter.closes[0][1]
    assert s.ending and s.end_reason == cause.reason
    # the adapter's legs go down; it reports how, but the cause stays
    assert s.closed(EndReason.CLIENT_CLOSED) == cause.reason
    await s.finish()
    if drain is not None:
        assert await drain == 0
    await kit.settle()
    row = kit.row(s.id)
    assert row.end_reason == cause.reason and row.ended_at is not None
    assert kit.verify(row).status == "intact"
    (terminated,) = kit.audit("session.terminated", s.id)
    assert terminated.details["reason"] == cause.reason
    (end,) = kit.audit("session.end", s.id)
    assert end.details["reason"] == cause.reason
    assert len(adapter.closes) == 1
    assert len(kit.node.sessions) == 0 and kit.node.live.get(s.id) is None


@pytest.mark.parametrize("cause", CAUSES, ids=str)
async def test_client_closes_first_then_the_cause_arrives(kit: Kit, cause: Cause) -> None:
    s, adapter = await kit.live_session()
    assert s.closed(EndReason.CLIENT_CLOSED) == "client-closed"
    # the final row is not written yet: the session is still on the node and watched
    assert kit.node.sessions.get(s.id) is s and kit.node.live.get(s.id) is s.live
    drain = await cause.fire(kit, s)
    assert s.end_reason == "client-closed"
    await s.finish()
    if drain is not None:
        assert await drain == 0
    await kit.settle()
    assert adapter.closes == []
    row = kit.row(s.id)
    assert row.end_reason == "client-closed"
    assert kit.verify(row).status == "intact"
    assert kit.audit("session.terminated", s.id) == []
    (end,) = kit.audit("session.end", s.id)
    assert end.details["reason"] == "client-closed"


@pytest.mark.parametrize("cause", CAUSES, ids=str)
async def test_cause_after_the_final_row_changes_nothing(kit: Kit, cause: Cause) -> None:
    s, adapter = await kit.live_session()
    s.closed(EndReason.EXIT)
    await s.finish()
    before = kit.row(s.id)
    drain = await cause.fire(kit, s)
    if drain is not None:
        assert await drain == 0
    await kit.settle()
    assert adapter.closes == [] and kit.row(s.id) == before
    assert kit.audit("session.terminated", s.id) == []


async def test_node_stop_while_the_recording_opens_waits_for_the_final_row(kit: Kit) -> None:
    s, adapter = kit.session()
    adapter.auto_close = True
    starting = asyncio.ensure_future(s.start_recording({"request": "shell"}))
    await asyncio.sleep(0)
    assert not starting.done()
    assert await drain_sessions(kit.node, 0, asyncio.Event()) == 0
    await starting
    assert [r for r, _ in adapter.closes] == ["node-stop"]
    row = kit.row(s.id)
    assert row.end_reason == "node-stop" and row.final_hash
    assert kit.verify(row).status == "intact"
    assert s.go_live() is False
