"""The core's hold: a held command waits on the requests inbox, and the store decides.

A real node on SQLite (the kit) with an approver; approvals go through the same
``RequestFlow`` the SSH built-ins, the CLI and the console use. "Another node"
is a second ``RequestFlow`` on the same store, which announces nothing here: the
wait must find the decision by reading the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bastion.access_requests import RequestRefused
from bastion.request_flow import RequestFlow
from bastion.session.core import Session
from bastion.session.hooks import ALLOW, Decision, SessionHook, Verdict
from bastion.session.reasons import EndReason
from bastion.store.models import AccessRequest, RequestKind, RequestState, Role
from tests.bastion.session.kit import FakeAdapter, Kit

pytestmark = pytest.mark.timeout(60)

HOLD = Decision(Verdict.HOLD, "rule 'hold-reboot' (hold): reboot", rule="hold-reboot", hook="p")


class HoldReboot(SessionHook):
    """Holds ``reboot``, allows everything else."""

    name = "hold-reboot"

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        return HOLD if text.startswith("reboot") else ALLOW


async def eventually(check: Callable[[], object], what: str) -> object:
    """Poll without blocking the loop the node runs on."""
    for _ in range(2000):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _pending(kit: Kit) -> AccessRequest | None:
    found = kit.node.store.list_requests(state=RequestState.PENDING)
    return found[0] if found else None


async def _held(kit: Kit, approvers: tuple[str, ...] = ("bob",)) -> tuple[
    Session, FakeAdapter, asyncio.Task[bool], AccessRequest
]:  # fmt: skip
    for name in approvers:
        kit.node.store.add_user(name, Role.APPROVER, [], None, kit.clock() - 10)
    kit.node.hooks.register(HoldReboot())
    kit.node.hold_waits.poll = 0.02
    s, adapter = await kit.recorded_session()
    task = asyncio.ensure_future(s.judge("command", "reboot now", "exact"))
    # The row is visible once its transaction commits, while the thread that stored it is
    # still naming the approvers: the command is held once its wait has begun (the
    # contractor was told by then), not when the row shows.
    await eventually(lambda: s.holding is not None, "the held command's wait")
    request = _pending(kit)
    assert isinstance(request, AccessRequest)
    return s, adapter, task, request


async def _end(kit: Kit, s: Session) -> None:
    if not s.ending:
        s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    await kit.settle()


async def test_approved_on_this_node_runs_and_is_audited_with_the_approver(kit: Kit) -> None:
    s, adapter, task, request = await _held(kit)
    assert request.kind is RequestKind.COMMAND and request.held is not None
    assert (request.held.text, request.held.session_id) == ("reboot now", s.id)
    assert request.held.rule == "hold-reboot" and request.targets == ("web1",)
    assert not task.done()
    held_line = adapter.told[0]
    assert f"request #{request.id}" in held_line and "can approve: bob" in held_line
    await kit.node.call(kit.node.requests.approve, request.id, "bob")
    assert await task is True
    assert adapter.told[-1] == f"request #{request.id} approved by bob: running it now"
    assert kit.node.store.get_request(request.id).state is RequestState.APPROVED  # type: ignore[union-attr]
    assert len(kit.node.hold_waits) == 0
    await _end(kit, s)
    (approved,) = kit.audit("policy.hold-approved", s.id)
    assert approved.details["approver"] == "bob" and approved.details["request"] == request.id
    assert len(kit.audit("policy.hold", s.id)) == 1
    assert [r.actor for r in kit.audit("request.approved")] == ["bob"]
    markers = kit.markers(kit.row(s.id))
    assert f"hold: request #{request.id} approved by bob" in markers


async def test_a_decision_made_on_another_node_is_found_in_the_store(kit: Kit) -> None:
    s, adapter, task, request = await _held(kit)
    elsewhere = RequestFlow(kit.node.store, kit.config.requests, clock=kit.clock)  # no announce
    await asyncio.to_thread(elsewhere.deny, request.id, "bob", "not during business hours")
    assert await task is False
    assert adapter.told[-1] == "denied by bob: not during business hours"
    await _end(kit, s)
    (denied,) = kit.audit("policy.hold-denied", s.id)
    assert denied.details["outcome"] == "denied" and denied.details["approver"] == "bob"


async def test_nobody_deciding_in_time_denies_and_lapses_the_request(kit: Kit) -> None:
    s, adapter, task, request = await _held(kit)
    kit.clock.now = request.lapses_at + 1  # [policy] hold_timeout (5m) has passed
    assert await task is False
    assert adapter.told[-1] == f"denied: nobody approved request #{request.id} within 5m00s"
    assert kit.node.store.get_request(request.id).state is RequestState.LAPSED  # type: ignore[union-attr]
    with pytest.raises(RequestRefused, match="lapsed|not pending"):
        await kit.node.call(kit.node.requests.approve, request.id, "bob")
    await _end(kit, s)
    (denied,) = kit.audit("policy.hold-denied", s.id)
    assert denied.details["outcome"] == "lapsed" and denied.details["approver"] is None
    assert len(kit.audit("request.lapsed")) == 1


async def test_the_session_ending_while_held_drops_the_request(kit: Kit) -> None:
    s, _adapter, task, request = await _held(kit)
    s.closed(EndReason.CLIENT_CLOSED)  # the contractor went away
    assert await task is False
    found = kit.node.store.get_request(request.id)
    assert found is not None and found.state is RequestState.DROPPED
    await _end(kit, s)
    assert len(kit.audit("policy.hold-dropped", s.id)) == 1
    assert len(kit.audit("request.dropped")) == 1


async def test_the_contractor_cannot_approve_their_own_held_command(kit: Kit) -> None:
    s, _adapter, task, request = await _held(kit)
    with pytest.raises(RequestRefused, match="nobody approves their own"):
        await kit.node.call(kit.node.requests.approve, request.id, "alice")
    with pytest.raises(RequestRefused, match="approved as it is"):
        await kit.node.call(kit.node.requests.approve, request.id, "bob", duration=60.0)
    assert not task.done()
    await kit.node.call(kit.node.requests.deny, request.id, "bob", "no")
    assert await task is False
    await _end(kit, s)


async def test_two_approvals_needed_means_two_distinct_approvers(kit: Kit) -> None:
    kit.node.store.set_target_request_policy("web1", approvals=2, approvers=None, max_request=None)
    s, adapter, task, request = await _held(kit, approvers=("bob", "carol"))
    assert "2 distinct approvals needed" in adapter.told[0]
    await kit.node.call(kit.node.requests.approve, request.id, "bob")
    await asyncio.sleep(0.1)
    assert not task.done()
    await kit.node.call(kit.node.requests.approve, request.id, "carol")
    assert await task is True
    await _end(kit, s)


async def test_nobody_able_to_approve_denies_at_once(kit: Kit) -> None:
    kit.node.hooks.register(HoldReboot())
    s, adapter = await kit.recorded_session()
    assert await s.judge("command", "reboot", "exact") is False
    assert "nobody can approve it" in adapter.told[-1]
    (request,) = kit.node.store.list_requests()
    assert request.state is RequestState.DROPPED
    await _end(kit, s)
    (denied,) = kit.audit("policy.hold-denied", s.id)
    assert denied.details["outcome"] == "unapprovable"


async def test_other_sessions_go_on_while_a_command_is_held(kit: Kit) -> None:
    s, _adapter, task, request = await _held(kit)
    other, _ = await kit.recorded_session()
    assert await asyncio.wait_for(other.judge("command", "uptime", "exact"), 5) is True
    assert not task.done()
    await kit.node.call(kit.node.requests.approve, request.id, "bob")
    assert await task is True
    await _end(kit, other)
    await _end(kit, s)
