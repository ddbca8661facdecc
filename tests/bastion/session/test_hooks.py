"""Hooks: admission and policy fail closed, observers cannot break a session."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bastion.session.core import Session
from bastion.session.hooks import (
    ALLOW,
    AdmissionRequest,
    CommandSeen,
    Decision,
    FileSeen,
    Hooks,
    SessionEnded,
    SessionEvent,
    SessionHook,
    SessionStarted,
    StatementSeen,
    Verdict,
    VolumeCrossed,
)
from bastion.session.reasons import EndReason
from tests.bastion.session.kit import Kit

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20


class Fixed(SessionHook):
    """Answers every question with one decision and remembers what it was asked."""

    def __init__(self, decision: Decision, name: str = "fixed") -> None:
        self.decision = decision
        self.name = name
        self.asked: list[tuple[str, str, object]] = []

    async def admit(self, request: AdmissionRequest) -> Decision:
        self.asked.append(("admit", request.kind, request.command))
        return self.decision

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        self.asked.append(("command", text, exact))
        return self.decision

    async def statement(self, session: Session, sql: str) -> Decision:
        self.asked.append(("statement", sql, None))
        return self.decision

    async def file(self, session: Session, path: str, operation: str) -> Decision:
        self.asked.append(("file", path, operation))
        return self.decision


class Broken(SessionHook):
    name = "broken"

    async def admit(self, request: AdmissionRequest) -> Decision:
        raise RuntimeError("admission backend down")

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        raise RuntimeError("policy backend down")

    def observe(self, session: Session, event: SessionEvent) -> None:
        raise RuntimeError("alerting down")

    async def ended(self, session: Session) -> None:
        raise RuntimeError("notifier down")


class Watcher(SessionHook):
    name = "watcher"

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []
        self.ended_ids: list[str] = []

    def observe(self, session: Session, event: SessionEvent) -> None:
        self.events.append(event)

    async def ended(self, session: Session) -> None:
        self.ended_ids.append(session.id)


class AdmitOnly(SessionHook):
    name = "admit-only"

    def __init__(self) -> None:
        self.called = 0

    async def admit(self, request: AdmissionRequest) -> Decision:
        self.called += 1
        return ALLOW


def _request(kit: Kit) -> AdmissionRequest:
    access = kit.access()
    return AdmissionRequest(
        user=kit.user,
        target=access.target,
        grant=access.grant,
        protocol="ssh",
        kind="exec",
        login=access.login,
        client_addr="192.0.2.7:50000",
        command="uptime",
    )


# --- admission -------------------------------------------------------------------------


async def test_admission_with_no_hooks_allows(kit: Kit) -> None:
    assert await Hooks().admit(_request(kit)) == ALLOW


async def test_admission_hook_that_raises_refuses(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    after = Fixed(ALLOW, "after")
    hooks = Hooks([Fixed(ALLOW, "before"), Broken(), after])
    with caplog.at_level(logging.ERROR, logger="bastion.session.hooks"):
        decision = await hooks.admit(_request(kit))
    assert decision == Decision(Verdict.DENY, "a bastion check failed", hook="broken")
    assert not decision.verdict.lets_through
    assert after.asked == []  # refused at the first failure
    assert "admission hook broken failed; refusing" in caplog.text


async def test_admission_takes_the_strictest_answer(kit: Kit) -> None:
    warn = Decision(Verdict.WARN, "outside hours", hook="hours")
    hold = Decision(Verdict.HOLD, "needs approval", hook="approvals")
    hooks = Hooks([Fixed(warn), Fixed(hold), Fixed(ALLOW)])
    assert await hooks.admit(_request(kit)) == hold


# --- judging -------------------------------------------------------------------------


async def test_judge_with_no_judging_hooks_calls_nothing(kit: Kit) -> None:
    admit_only, watcher = AdmitOnly(), Watcher()
    kit.node.hooks.register(admit_only)
    kit.node.hooks.register(watcher)
    s, adapter = await kit.live_session()
    assert not kit.node.hooks.judging and kit.node.hooks.observing
    watcher.events.clear()
    for kind, extra in (("command", "exact"), ("statement", ""), ("file", "write")):
        assert await s.judge(kind, "rm -rf /", extra) is True
    assert watcher.events == [] and admit_only.called == 0
    assert adapter.told == [] and adapter.closes == []
    await kit.settle()
    assert kit.node.store.list_audit(action_prefix="policy.") == []


async def test_allow_lets_through_silently_and_is_observed(kit: Kit) -> None:
    judge, watcher = Fixed(ALLOW), Watcher()
    kit.node.hooks.register(judge)
    kit.node.hooks.register(watcher)
    s, adapter = await kit.live_session()
    assert await s.judge("command", "uptime", "exact") is True
    assert await s.judge("statement", "SELECT 1") is True
    assert await s.judge("file", "/etc/motd", "read") is True
    assert judge.asked == [
        ("command", "uptime", True),
        ("statement", "SELECT 1", None),
        ("file", "/etc/motd", "read"),
    ]
    assert watcher.events == [
        SessionStarted(),
        CommandSeen("uptime", True, ALLOW),
        StatementSeen("SELECT 1", ALLOW),
        FileSeen("/etc/motd", "read", ALLOW),
    ]
    assert adapter.told == [] and adapter.closes == []


async def test_warn_tells_and_lets_through(kit: Kit) -> None:
    warn = Decision(Verdict.WARN, "production database", rule="prod", hook="guard")
    kit.node.hooks.register(Fixed(warn))
    s, adapter = await kit.live_session()
    assert await s.judge("statement", "DELETE FROM t") is True
    assert adapter.told == ["warning (rule prod): production database"]
    assert adapter.closes == [] and not s.ending
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    await kit.settle()
    (audit,) = kit.audit("policy.warn", s.id)
    assert audit.details["text"] == "DELETE FROM t" and audit.details["rule"] == "prod"
    markers = kit.markers(kit.row(s.id))
    assert "policy warn: statement 'DELETE FROM t': production database" in markers


async def test_deny_tells_and_blocks_but_the_session_goes_on(kit: Kit) -> None:
    verdict = Verdict.DENY  # a hold waits for approval: tests/bastion/session/test_hold.py
    kit.node.hooks.register(Fixed(Decision(verdict, "not here", rule="r2")))
    s, adapter = await kit.live_session()
    assert await s.judge("command", "reboot", "exact") is False
    assert adapter.told == ["denied (rule r2): not here"]
    assert adapter.closes == [] and not s.ending
    await kit.settle()
    assert len(kit.audit(f"policy.{verdict.value}", s.id)) == 1


async def test_terminate_ends_the_session_with_reason_policy(kit: Kit) -> None:
    kit.node.hooks.register(Fixed(Decision(Verdict.TERMINATE, "no shells on db", rule="r3")))
    s, adapter = await kit.live_session()
    assert await s.judge("command", "bash", "") is False
    assert adapter.told == []
    assert adapter.closes == [("policy", "denied (rule r3): no shells on db")]
    assert s.end_reason == "policy"
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    await kit.settle()
    assert kit.row(s.id).end_reason == "policy"
    assert len(kit.audit("policy.terminate", s.id)) == 1


async def test_lock_locks_the_user_and_ends_the_session(kit: Kit) -> None:
    kit.node.hooks.register(Fixed(Decision(Verdict.LOCK, "exfiltration", rule="r4")))
    s, adapter = await kit.live_session()
    assert await s.judge("file", "/etc/shadow", "read") is False
    assert adapter.closes == [("user-locked", "denied (rule r4): exfiltration")]
    user = kit.node.store.get_user("alice")
    assert user is not None and user.locked_until is not None
    assert user.locked_until > kit.clock()
    await kit.settle()
    assert kit.audit("user.locked") and kit.audit("policy.lock", s.id)


async def test_strictest_judge_wins_and_a_raising_judge_denies(kit: Kit) -> None:
    hooks = kit.node.hooks
    hooks.register(Fixed(Decision(Verdict.WARN, "hmm")))
    hooks.register(Fixed(Decision(Verdict.DENY, "no", hook="b")))
    s, _ = await kit.live_session()
    assert await hooks.judge(s, "command", "x", "exact") == Decision(Verdict.DENY, "no", hook="b")
    hooks.register(Broken())
    decision = await hooks.judge(s, "command", "x", "exact")
    assert decision == Decision(Verdict.DENY, "a bastion check failed", hook="broken")


async def test_a_raising_judge_fails_closed_through_the_session(kit: Kit) -> None:
    kit.node.hooks.register(Broken())
    s, adapter = await kit.live_session()
    assert await s.judge("command", "uptime", "exact") is False
    assert adapter.told == ["denied: a bastion check failed"]
    assert not s.ending


# --- observing -----------------------------------------------------------------------


async def test_a_raising_observer_is_logged_and_the_session_goes_on(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    broken, watcher = Broken(), Watcher()
    kit.node.hooks.register(broken)
    kit.node.hooks.register(watcher)
    s, adapter = kit.session()
    with caplog.at_level(logging.ERROR, logger="bastion.session.hooks"):
        await s.start_recording({"request": "shell"})
        assert s.go_live() is True
        s.output_seen(MIB)
        s.terminate(EndReason.ADMIN_TERMINATED)
        s.closed(EndReason.CLIENT_CLOSED)
        await s.finish()
    assert watcher.events == [
        SessionStarted(),
        VolumeCrossed(MIB, 0),
        SessionEnded("admin-terminated"),
    ]
    assert watcher.ended_ids == [s.id]
    assert kit.row(s.id).end_reason == "admin-terminated"
    assert "observer hook broken failed on SessionStarted" in caplog.text
    assert "observer hook broken failed on VolumeCrossed" in caplog.text
    assert f"end hook broken failed for session {s.id}" in caplog.text
    assert len(adapter.closes) == 1


async def test_closed_is_observed_once_as_the_end(kit: Kit) -> None:
    watcher = Watcher()
    kit.node.hooks.register(watcher)
    s, _ = await kit.live_session()
    s.closed(EndReason.EXIT)
    s.closed(EndReason.CLIENT_CLOSED)
    s.terminate(EndReason.NODE_STOP)
    await s.finish()
    assert watcher.events == [SessionStarted(), SessionEnded("exit")]


async def test_volume_is_observed_at_1_2_and_4_mib(kit: Kit) -> None:
    watcher = Watcher()
    kit.node.hooks.register(watcher)
    s, _ = await kit.live_session()
    s.input_seen(10)
    watcher.events.clear()
    s.output_seen(MIB - 1)
    assert watcher.events == []
    s.output_seen(1)
    s.output_seen(MIB - 1)
    s.output_seen(1)
    s.output_seen(MIB)
    s.output_seen(MIB - 1)
    assert watcher.events == [VolumeCrossed(MIB, 10), VolumeCrossed(2 * MIB, 10)]
    s.output_seen(1)
    assert watcher.events[-1] == VolumeCrossed(4 * MIB, 10) and len(watcher.events) == 3


async def test_one_big_output_crosses_each_mark_once(kit: Kit) -> None:
    watcher = Watcher()
    kit.node.hooks.register(watcher)
    s, _ = await kit.live_session()
    watcher.events.clear()
    s.output_seen(5 * MIB)  # past 1, 2 and 4 MiB at once: one event, not one per later byte
    s.output_seen(1)
    s.output_seen(1)
    assert watcher.events == [VolumeCrossed(5 * MIB, 0)]
    s.output_seen(3 * MIB)
    assert watcher.events[-1] == VolumeCrossed(8 * MIB + 2, 0) and len(watcher.events) == 2


class Slow(SessionHook):
    """A policy hook that answers only when the test says so."""

    name = "slow"

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        self.asked.set()
        await self.answer.wait()
        return self.decision


async def test_a_verdict_arriving_after_the_final_row_leaves_the_recording_sealed(
    kit: Kit,
) -> None:
    slow = Slow(Decision(Verdict.DENY, "not now", rule="r5"))
    kit.node.hooks.register(slow)
    s, adapter = await kit.live_session()
    judging = asyncio.ensure_future(s.judge("command", "reboot", "exact"))
    await slow.asked.wait()
    s.terminate(EndReason.ADMIN_TERMINATED)  # meanwhile an admin ends the session
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    row = kit.row(s.id)
    slow.answer.set()
    assert await judging is False
    s.warn("too late")
    await kit.settle()
    assert kit.audit("recording.failed", s.id) == []
    assert kit.row(s.id) == row and kit.verify(row).status == "intact"
    assert len(adapter.closes) == 1
