"""The outbox's parts without a server: the journal, its in-order replay, the grace.

The whole outage (a real PostgreSQL stopped and started under a live node) is
``test_state_outage.py``; here a real SQLite store takes the replayed writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import StoreUnavailable
from bastion.secretbox import SecretBox
from bastion.session.reasons import EndReason
from bastion.session.timebox import LiveSession, LiveSessions
from bastion.store import Store, open_store
from bastion.store.backends import connect
from bastion.store.models import Role, SessionRecord, TargetKind
from bastion.store.outbox import Outbox, StateWriter, session_row
from tests.bastion.test_small_parts import FakeHandle


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}", SecretBox(b"k" * 32))
    user = s.add_user("alice", Role.CONTRACTOR, [], None, 1.0)
    s.add_target(
        name="web1", kind=TargetKind.SSH, host="h", port=22, logins=["root"], principal="p",
        now=1.0,
    )  # fmt: skip
    assert user.id == 1
    return s


def _record(session_id: str) -> SessionRecord:
    return SessionRecord(
        id=session_id, user_id=1, user_name="alice", target_id=1, target_name="web1",
        grant_id=None, node="n1", protocol="ssh", login="root", client_addr="1.2.3.4:5",
        started_at=100.0, recording=f"{session_id}.rec",
    )  # fmt: skip


def test_journaled_writes_survive_a_restart_and_replay_in_order(
    tmp_path: Path, store: Store
) -> None:
    path = tmp_path / "state-outbox.db"
    outbox = Outbox(path)
    assert not path.exists()  # created only when a write must wait
    outbox.append("start_session", {"rec": session_row(_record("s1"))})
    outbox.append("append_audit", {"actor": "alice", "action": "session.start", "subject": "web1",
                                   "details": {"session": "s1"}, "at": 101.0})  # fmt: skip
    outbox.append("end_session", {"session_id": "s1", "ended_at": 150.0,
                                  "reason": "state-unavailable", "bytes_in": 3, "bytes_out": 40,
                                  "events": 9, "final_hash": "ab" * 32})  # fmt: skip
    outbox.append("append_audit", {"actor": "alice", "action": "session.end", "subject": "web1",
                                   "details": {"session": "s1"}, "at": 151.0})  # fmt: skip
    outbox.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    again = Outbox(path)  # a node restarted with writes still waiting
    assert again.pending == 4
    writer = StateWriter(store, again)
    # while writes wait, a new one queues behind them even though the database answers
    assert writer.write("append_audit", actor="alice", action="x.later", at=152.0) is False
    assert writer.replay() == 5 and writer.pending == 0
    s = store.get_session("s1")
    assert s is not None and s.end_reason == "state-unavailable"
    assert (s.bytes_in, s.bytes_out, s.events, s.final_hash) == (3, 40, 9, "ab" * 32)
    actions = [e.action for e in store.list_audit()]
    assert actions == ["session.start", "session.end", "x.later"]
    assert store.verify_audit_chain() is None
    # nothing waits: writes go straight to the database again
    assert writer.write("append_audit", actor="alice", action="x.direct", at=153.0) is True
    assert writer.pending == 0


def test_a_write_the_database_refuses_is_dropped_not_blocking_the_rest(
    tmp_path: Path, store: Store
) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.append("end_session", {"session_id": "nope", "ended_at": 1.0, "reason": "exit",
                                  "bytes_in": 0, "bytes_out": 0})  # fmt: skip
    outbox.append("append_audit", {"actor": "a", "action": "b.c", "at": 2.0})
    writer = StateWriter(store, outbox)
    assert writer.replay() == 2 and writer.pending == 0
    assert [e.action for e in store.list_audit()] == ["b.c"]


def test_an_unreachable_postgresql_is_store_unavailable_with_its_address() -> None:
    from bastion.openssh_target import free_port

    url = f"postgresql://bastion:secret@127.0.0.1:{free_port()}/state"
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1") as raised:
        connect(url)
    assert "secret" not in str(raised.value)


def test_sessions_go_on_for_the_grace_then_end_as_state_unavailable() -> None:
    clock = [1000.0]
    live = LiveSessions(clock=lambda: clock[0])
    live.outage_grace = 60
    h = FakeHandle()
    live.add(LiveSession("s1", "alice", "web1", 7, 9999.0, h, 1000.0, 1000.0))
    down = StoreUnavailable("PostgreSQL state store is unavailable: connection refused")
    live.state_unreadable(down)
    clock[0] = 1059
    live.state_unreadable(down)
    assert h.ended == []
    live.state_readable()  # it came back: the next outage starts a fresh grace
    clock[0] = 1100
    live.state_unreadable(down)
    clock[0] = 1159
    live.state_unreadable(down)
    assert h.ended == []
    clock[0] = 1160
    live.state_unreadable(down)
    ((reason, message),) = h.ended
    assert reason == EndReason.STATE_UNAVAILABLE.value == "state-unavailable"
    assert "lost its state database" in message and "60s" in message
