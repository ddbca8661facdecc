"""``Session`` on a real node (SQLite, recordings on disk), driven like an adapter drives it.

Each test states the exact sequence: what the adapter does, what the core asks
of the adapter (``tell`` / ``close``), and what ends up in the row, the audit
trail and the sealed recording.
"""

from __future__ import annotations

import asyncio

import pytest

from bastion.session.admission import Refused
from bastion.session.core import Session
from bastion.session.lifecycle import Phase
from bastion.session.reasons import EndReason, RefusalReason
from tests.bastion.session.kit import T0, Kit

pytestmark = pytest.mark.timeout(60)


async def test_start_recording_writes_the_live_row_and_audits_session_start(kit: Kit) -> None:
    s, adapter = kit.session()
    assert s.life.history == [Phase.ADMITTED] and kit.node.sessions.get(s.id) is s
    assert kit.node.store.get_session(s.id) is None
    await s.start_recording({"request": "shell"}, request="shell")
    assert s.phase is Phase.RECORDING
    row = kit.row(s.id)
    assert (row.user_name, row.target_name, row.grant_id) == ("alice", "web1", kit.grant.id)
    assert (row.protocol, row.login, row.client_addr, row.node) == (
        "ssh",
        "deploy",
        "192.0.2.7:50000",
        "n1",
    )
    assert row.started_at == T0 and row.ended_at is None and row.end_reason is None
    assert s.recording is not None and row.recording == s.recording.writer.location
    (start,) = kit.audit("session.start", s.id)
    assert start.actor == "alice" and start.subject == "web1"
    assert start.details["request"] == "shell" and start.details["grant"] == kit.grant.id
    assert kit.node.live.get(s.id) is None  # not live yet: the time box does not watch it
    assert adapter.told == [] and adapter.closes == []


async def test_go_live_registers_with_the_time_box_and_the_node(kit: Kit) -> None:
    s, _ = await kit.recorded_session()
    kit.clock.now = T0 + 5
    assert s.go_live() is True
    assert s.phase is Phase.LIVE
    live = kit.node.live.get(s.id)
    assert live is not None and live is s.live and live.handle is s
    assert (live.grant_id, live.not_after) == (kit.grant.id, kit.grant.not_after)
    assert live.started_at == live.last_input == T0 + 5
    assert kit.node.sessions.get(s.id) is s
    kit.clock.now = T0 + 9
    s.input_seen(3)
    assert live.last_input == T0 + 9


async def test_warn_tells_the_contractor_and_marks_the_recording(kit: Kit) -> None:
    s, adapter = await kit.live_session()
    s.warn("grant ends soon")
    assert adapter.told == ["grant ends soon"] and adapter.closes == []
    assert not s.ending
    s.closed(EndReason.EXIT)
    await s.finish()
    assert "warning: grant ends soon" in kit.markers(kit.row(s.id))


async def test_terminate_closes_once_and_the_first_reason_stays(kit: Kit) -> None:
    s, adapter = await kit.live_session()
    s.terminate(EndReason.ADMIN_TERMINATED)
    assert adapter.closes == [("admin-terminated", "an administrator ended this session")]
    assert s.ending and s.end_reason == "admin-terminated"
    assert s.live is not None and s.live.ending
    for reason in (EndReason.ADMIN_TERMINATED, EndReason.POLICY, EndReason.NODE_STOP):
        s.terminate(reason, "again")
    assert len(adapter.closes) == 1
    assert s.closed(EndReason.CLIENT_CLOSED) == "admin-terminated"
    await s.finish()
    await kit.settle()
    (audit,) = kit.audit("session.terminated", s.id)
    assert audit.details["reason"] == "admin-terminated"
    assert audit.details["message"] == "an administrator ended this session"
    row = kit.row(s.id)
    assert row.end_reason == "admin-terminated"
    assert "terminated: admin-terminated" in kit.markers(row)
    assert len(adapter.closes) == 1


async def test_finish_seals_writes_the_final_row_and_leaves_the_node(kit: Kit) -> None:
    s, adapter = await kit.live_session()
    assert s.recording is not None
    s.recording.input(b"ls\r")
    s.input_seen(3)
    s.recording.output(b"file1  file2\r\n")
    s.output_seen(14)
    s.output_seen(6)
    kit.clock.now = T0 + 42
    assert s.closed(EndReason.EXIT) == "exit"
    await s.finish()
    assert s.phase is Phase.ENDED
    assert kit.node.sessions.get(s.id) is None and len(kit.node.sessions) == 0
    assert kit.node.live.get(s.id) is None
    row = kit.row(s.id)
    assert (row.end_reason, row.ended_at) == ("exit", T0 + 42)
    assert (row.bytes_in, row.bytes_out) == (3, 20)
    assert row.events >= 2 and row.final_hash and row.final_signature
    result = kit.verify(row)
    assert result.status == "intact", str(result)
    (end,) = kit.audit("session.end", s.id)
    assert end.details["reason"] == "exit"
    assert (end.details["bytes_in"], end.details["bytes_out"]) == (3, 20)
    assert end.details["final_hash"] == row.final_hash
    await s.finish()  # idempotent: nothing more happens
    await kit.settle()
    assert len(kit.audit("session.end", s.id)) == 1
    assert kit.row(s.id) == row
    assert adapter.closes == []


async def test_finish_without_closed_ends_as_client_closed(kit: Kit) -> None:
    s, _ = await kit.live_session()
    await s.finish()
    assert kit.row(s.id).end_reason == "client-closed"
    assert s.closed(EndReason.EXIT) == "client-closed"  # too late to change


async def test_unrecordable_session_is_refused_and_forgotten(kit: Kit) -> None:
    rec_dir = kit.config.recordings_dir
    if rec_dir.exists():
        for p in sorted(rec_dir.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        rec_dir.rmdir()
    rec_dir.write_text("not a directory")  # even root cannot create files below this
    s, adapter = kit.session()
    with pytest.raises(Refused) as refused:
        await s.start_recording({"request": "shell"})
    assert refused.value.reason == RefusalReason.RECORDING_UNAVAILABLE
    assert "cannot be recorded" in refused.value.message
    assert len(kit.node.sessions) == 0 and kit.node.sessions.get(s.id) is None
    assert kit.node.store.get_session(s.id) is None
    assert s.recording is None and s.go_live() is False
    (failed,) = kit.audit("recording.failed", s.id)
    assert failed.details["at_start"] is True and failed.details["fail_closed"] is True
    assert kit.audit("session.start", s.id) == []
    await s.finish()  # an adapter that finishes anyway changes nothing
    assert kit.node.store.get_session(s.id) is None and adapter.closes == []


async def test_a_stopping_node_refuses_new_sessions(kit: Kit) -> None:
    kit.node.stopping = True
    with pytest.raises(Refused) as refused:
        kit.session()
    assert refused.value.reason == RefusalReason.NODE_STOPPING
    assert len(kit.node.sessions) == 0


async def test_terminated_while_the_recording_opens_then_finished(kit: Kit) -> None:
    s, adapter = kit.session()
    starting = asyncio.ensure_future(s.start_recording({"request": "shell"}))
    await asyncio.sleep(0)  # start_recording is now waiting for the file and the row
    assert not starting.done() and s.life.history == [Phase.ADMITTED]
    s.terminate(EndReason.ADMIN_TERMINATED, "terminated by root: now")
    assert adapter.closes == [("admin-terminated", "terminated by root: now")]
    assert s.closed(EndReason.CLIENT_CLOSED) == "admin-terminated"
    await s.finish()  # waits for the row being written, then finishes it
    await starting
    assert s.phase is Phase.ENDED and s.life.history == [
        Phase.ADMITTED,
        Phase.ENDING,
        Phase.ENDED,
    ]
    assert s.go_live() is False
    row = kit.row(s.id)
    assert row.end_reason == "admin-terminated" and row.ended_at is not None
    assert row.final_hash and kit.verify(row).status == "intact"
    assert kit.audit("session.start", s.id) and kit.audit("session.end", s.id)
    assert len(kit.node.sessions) == 0 and len(adapter.closes) == 1


async def test_finished_by_the_adapter_while_the_recording_opens(kit: Kit) -> None:
    s, adapter = kit.session()
    starting = asyncio.ensure_future(s.start_recording({"request": "shell"}))
    await asyncio.sleep(0)
    assert not starting.done()
    await s.finish()  # the client went away during setup
    await starting
    row = kit.row(s.id)
    assert (row.end_reason, row.final_hash is not None) == ("client-closed", True)
    assert adapter.closes == [] and len(kit.node.sessions) == 0


async def test_grant_ended_while_connecting_never_relays(kit: Kit) -> None:
    s, adapter = await kit.recorded_session()
    kit.clock.now = kit.grant.not_after  # the grant ran out while the target was reached
    assert s.go_live() is False
    assert s.ending and s.end_reason == "grant-ended"
    assert [r for r, _ in adapter.closes] == ["grant-ended"]
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    assert kit.row(s.id).end_reason == "grant-ended"


def _sessions_of(kit: Kit) -> list[Session]:
    return kit.node.sessions.all()


async def test_many_sessions_are_independent(kit: Kit) -> None:
    (a, aa), (b, ba) = await kit.live_session(), await kit.live_session()
    assert {s.id for s in _sessions_of(kit)} == {a.id, b.id}
    a.terminate(EndReason.POLICY)
    assert ba.closes == [] and not b.ending
    a.closed(EndReason.CLIENT_CLOSED)
    await a.finish()
    assert [s.id for s in _sessions_of(kit)] == [b.id]
    b.closed(EndReason.EXIT)
    await b.finish()
    assert (kit.row(a.id).end_reason, kit.row(b.id).end_reason) == ("policy", "exit")
    assert [r for r, _ in aa.closes] == ["policy"]
