"""The routine stop: warn, a grace period, end with node-stop, wait for every final row."""

from __future__ import annotations

import asyncio

import pytest

from bastion.session import drain
from bastion.session.admission import Refused
from bastion.session.drain import drain_sessions
from bastion.session.reasons import EndReason, RefusalReason
from tests.bastion.session.kit import FakeAdapter, Kit

pytestmark = pytest.mark.timeout(60)

STOPPING = "this node is stopping for maintenance; this session ends in {}; reconnect to continue"


async def test_nothing_to_drain(kit: Kit) -> None:
    assert await drain_sessions(kit.node, 30, asyncio.Event()) == 0
    assert kit.node.stopping


async def test_sessions_that_end_within_the_grace_keep_their_reason(kit: Kit) -> None:
    (a, aa), (b, ba) = await kit.live_session(), await kit.live_session()
    stop = asyncio.ensure_future(drain_sessions(kit.node, 30, asyncio.Event()))
    await asyncio.sleep(0)
    assert kit.node.stopping and not stop.done()
    for adapter in (aa, ba):
        assert adapter.told == [STOPPING.format("30 seconds")]
    with pytest.raises(Refused) as refused:
        kit.session()  # no new session while stopping
    assert refused.value.reason == RefusalReason.NODE_STOPPING
    a.closed(EndReason.EXIT)
    await a.finish()
    assert not stop.done()
    b.closed(EndReason.CLIENT_CLOSED)
    await b.finish()
    assert await stop == 0
    assert (kit.row(a.id).end_reason, kit.row(b.id).end_reason) == ("exit", "client-closed")
    assert aa.closes == [] and ba.closes == []
    row = kit.row(a.id)
    assert f"warning: {STOPPING.format('30 seconds')}" in kit.markers(row)
    assert kit.verify(row).status == "intact"


async def test_sessions_that_stay_end_with_node_stop_after_the_grace(kit: Kit) -> None:
    sessions = [await kit.live_session(FakeAdapter(auto_close=True)) for _ in range(2)]
    assert await drain_sessions(kit.node, 0.2, asyncio.Event()) == 0
    assert len(kit.node.sessions) == 0
    node_stop = EndReason.NODE_STOP.words
    for s, adapter in sessions:
        assert adapter.told == [STOPPING.format("0.2 seconds")]
        assert adapter.closes == [("node-stop", node_stop)]
        row = kit.row(s.id)
        assert row.end_reason == "node-stop" and row.final_hash
        assert kit.verify(row).status == "intact"
        assert "terminated: node-stop" in kit.markers(row)


async def test_hurry_set_before_ends_at_once(kit: Kit) -> None:
    s, adapter = await kit.live_session(FakeAdapter(auto_close=True))
    hurry = asyncio.Event()
    hurry.set()
    assert await drain_sessions(kit.node, 3600, hurry) == 0
    assert adapter.closes == [("node-stop", EndReason.NODE_STOP.words)]
    assert kit.row(s.id).end_reason == "node-stop"


async def test_hurry_during_the_grace_cuts_it_short(kit: Kit) -> None:
    s, adapter = await kit.live_session(FakeAdapter(auto_close=True))
    hurry = asyncio.Event()
    stop = asyncio.ensure_future(drain_sessions(kit.node, 3600, hurry))
    await asyncio.sleep(0)
    assert adapter.told and adapter.closes == [] and not stop.done()
    hurry.set()  # the admin pressed Ctrl-C again
    assert await stop == 0
    assert adapter.closes == [("node-stop", EndReason.NODE_STOP.words)]
    assert kit.row(s.id).end_reason == "node-stop"


async def test_a_session_already_ending_is_not_warned(kit: Kit) -> None:
    s, adapter = await kit.live_session()
    s.terminate(EndReason.ADMIN_TERMINATED)
    stop = asyncio.ensure_future(drain_sessions(kit.node, 0, asyncio.Event()))
    await asyncio.sleep(0)
    assert adapter.told == [] and len(adapter.closes) == 1
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    assert await stop == 0
    assert kit.row(s.id).end_reason == "admin-terminated"


async def test_sessions_never_sealed_are_counted(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain, "SEAL_TIMEOUT", 0.05)
    s, adapter = await kit.live_session()  # an adapter that never reports back
    assert await drain_sessions(kit.node, 0, asyncio.Event()) == 1
    assert adapter.closes == [("node-stop", EndReason.NODE_STOP.words)]
    assert kit.row(s.id).ended_at is None  # still live: recovery at the next start ends it
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    assert kit.row(s.id).end_reason == "node-stop"
