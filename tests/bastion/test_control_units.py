"""Control API parts without a node: framing (fuzzed), wire types, policy, snapshots, watchers."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.control.auth import (
    authorize_operator,
    check_token,
    peer_uid_allowed,
    require_role,
    token_hash,
)
from bastion.control.framing import ControlProtocolError, LineFramer, encode
from bastion.control.messages import (
    ControlError,
    LiveEnd,
    LiveEvent,
    LiveOutput,
    LiveQuery,
    Operator,
    RequestInfo,
    Snapshot,
    event_from_wire,
    event_to_wire,
    request_from_wire,
    request_to_wire,
)
from bastion.control.request_view import history_of, list_requests, request_of
from bastion.control.snapshot import build_snapshot
from bastion.control.watch import Watcher
from bastion.pg.query_event import QUERY_EVENT
from bastion.request_flow import RequestFlow
from bastion.requests_config import RequestsConfig
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Role, TargetKind, TokenPurpose, TokenRecord, User
from recorder import RecordingReader
from recorder.events import Output
from recorder.writer import RecordingWriter, WriterPolicy
from replay.terminal import TerminalEmulator
from tests.fuzzing import Mutation, apply_mutations, byte_mutations

# -- framing -----------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_messages = st.dictionaries(st.text(max_size=10), _json_values, max_size=5)


def _feed(framer: LineFramer, data: bytes, piece: int) -> list[dict[str, object]]:
    out = []
    for i in range(0, len(data), piece):
        framer.receive_data(data[i : i + piece])
        while (msg := framer.next_message()) is not None:
            out.append(msg)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(_messages, max_size=5), st.integers(1, 64))
def test_framing_round_trips_whole_and_in_pieces(msgs: list[dict[str, object]], piece: int) -> None:
    data = b"".join(encode(m) for m in msgs)
    assert _feed(LineFramer(), data, len(data) or 1) == msgs
    assert _feed(LineFramer(), data, piece) == msgs


@settings(max_examples=300, deadline=None)
@given(st.lists(_messages, min_size=1, max_size=4), byte_mutations(16), st.integers(1, 9))
def test_framing_fuzz_parses_or_raises_its_own_error(
    msgs: list[dict[str, object]], ops: list[Mutation], piece: int
) -> None:
    data = apply_mutations(b"".join(encode(m) for m in msgs), ops, max_insert=8)
    try:
        for msg in _feed(LineFramer(max_line=200), data, piece):
            assert isinstance(msg, dict)
    except ControlProtocolError:
        pass


def test_framing_refuses_endless_lines() -> None:
    framer = LineFramer(max_line=100)
    framer.receive_data(b"x" * 101)
    with pytest.raises(ControlProtocolError, match="longer than 100"):
        framer.next_message()
    framer = LineFramer()
    framer.receive_data(b"[1, 2]\n")
    with pytest.raises(ControlProtocolError, match="JSON object"):
        framer.next_message()


def test_live_events_round_trip_on_the_wire() -> None:
    events: list[LiveEvent] = [
        Snapshot("S", 80, 24, 1.5, b"\x1b[2J\xff", [{"sql": "SELECT 1"}]),
        LiveOutput(2.0, b"\x00\x01bytes"),
        LiveQuery(3.0, {"seq": 1, "kind": "simple"}),
        LiveEnd("exit"),
    ]
    for ev in events:
        assert event_from_wire(event_to_wire(ev)) == ev
    with pytest.raises(ControlError, match="unknown watch event"):
        event_from_wire({"type": "nope"})


# -- policy --------------------------------------------------------------------------------


def _user(role: Role, disabled: bool = False, locked_until: float | None = None) -> User:
    return User(1, "ann", role, (), None, None, locked_until, disabled, 0.0)


def test_peer_uid_check() -> None:
    assert peer_uid_allowed(0, 1000)
    assert peer_uid_allowed(1000, 1000)
    assert not peer_uid_allowed(1001, 1000)


def test_who_gets_in_and_what_they_may_do() -> None:
    now = time.time()
    admin = authorize_operator("ann", _user(Role.ADMIN), now)
    auditor = authorize_operator("ann", _user(Role.AUDITOR), now)
    assert admin == Operator("ann", "admin") and auditor.role == "auditor"
    for refused, why in [
        (None, "no bastion user"),
        (_user(Role.CONTRACTOR), "for admins, auditors and approvers"),
        (_user(Role.ADMIN, disabled=True), "disabled"),
        (_user(Role.ADMIN, locked_until=now + 60), "locked"),
    ]:
        with pytest.raises(ControlError, match=why):
            authorize_operator("ann", refused, now)
    for op in ("watch", "terminate", "lock_user"):
        require_role(admin, op)
        with pytest.raises(ControlError, match="needs the admin role"):
            require_role(auditor, op)
    for op in ("list_sessions", "search", "recording_path", "whoami", "list_requests"):
        require_role(auditor, op)


def test_approvers_decide_requests_and_see_nothing_else() -> None:
    now = time.time()
    admin = authorize_operator("ann", _user(Role.ADMIN), now)
    auditor = authorize_operator("ann", _user(Role.AUDITOR), now)
    approver = authorize_operator("ann", _user(Role.APPROVER), now)
    assert approver == Operator("ann", "approver")
    for op in ("whoami", "list_requests", "approve_request", "deny_request"):
        require_role(approver, op)
        require_role(admin, op)
    for op in ("list_sessions", "search", "recording_path", "watch", "terminate", "lock_user"):
        with pytest.raises(ControlError, match="approvers can list, approve and deny"):
            require_role(approver, op)
    for op in ("approve_request", "deny_request"):
        with pytest.raises(ControlError, match="needs the approver or admin role"):
            require_role(auditor, op)


def test_control_tokens() -> None:
    now = time.time()

    def record(
        purpose: TokenPurpose, name: str = "ann", revoked: float | None = None
    ) -> TokenRecord:
        return TokenRecord(
            1,
            purpose,
            1,
            name,
            None,
            None,
            None,
            None,
            token_hash("t"),
            now,
            now + 60,
            "x",
            revoked,
        )

    check_token("ann", record(TokenPurpose.CONTROL), now)
    for bad in (None, record(TokenPurpose.DB), record(TokenPurpose.CONTROL, "bob")):
        with pytest.raises(ControlError, match="invalid control token"):
            check_token("ann", bad, now)
    with pytest.raises(ControlError, match="expired or revoked"):
        check_token("ann", record(TokenPurpose.CONTROL, revoked=now), now)


# -- snapshot from a real writer -------------------------------------------------------------


def test_snapshot_of_a_live_writer_matches_the_whole_stream(tmp_path: Path) -> None:
    writer = RecordingWriter.create(
        tmp_path / "s.bastrec",
        "01SNAPSHOTAAAAAAAAAAAAAAAA",
        {"cols": 40, "rows": 10},
        Ed25519PrivateKey.generate(),
        policy=WriterPolicy(chunk_bytes=4096),
    )
    stream = b"".join(b"\x1b[1;3%dmline %d\x1b[0m\r\n" % (i % 8, i) for i in range(5000))
    stream += b"\x1b[?1049h\x1b[H\x1b[2J" + b"~\r\n" * 3 + b"\x1b[2;2Hedit"
    for i in range(0, len(stream), 1000):
        writer.output(stream[i : i + 1000])
        writer.event(QUERY_EVENT, {"seq": i})
    tail = writer.live_tail()
    assert len(tail.chunks) > 10 and tail.pending  # some in the file, some in memory
    with open(tmp_path / "s.bastrec", "rb") as f:
        snap = build_snapshot(f, tail, "01SNAPSHOTAAAAAAAAAAAAAAAA", None)
    writer.close()
    assert (snap.cols, snap.rows) == (40, 10)
    assert len(snap.screen_bytes) < 200  # the cut is at the last clear, not the start
    assert [q["seq"] for q in snap.queries] == list(range(0, len(stream), 1000))
    whole, late = TerminalEmulator(40, 10), TerminalEmulator(40, 10)
    whole.feed(stream)
    late.feed(snap.screen_bytes)
    assert late.snapshot() == whole.snapshot()


def test_snapshot_replays_from_after_a_damaged_chunk(tmp_path: Path) -> None:
    path = tmp_path / "d.bastrec"
    writer = RecordingWriter.create(
        path, "01SNAPDAMAGEAAAAAAAAAAAAAA", {}, Ed25519PrivateKey.generate(),
        policy=WriterPolicy(chunk_bytes=4096),
    )  # fmt: skip
    for i in range(3000):
        writer.output(b"line %d\r\n" % i)
    tail = writer.live_tail()
    writer.close()
    victim = tail.chunks[-3]
    data = bytearray(path.read_bytes())
    data[victim.offset + 8 + 65 + 20] ^= 0x55  # inside the chunk's zstd frame
    path.write_bytes(bytes(data))
    with open(path, "rb") as f:
        snap = build_snapshot(f, tail, "01SNAPDAMAGEAAAAAAAAAAAAAA", None)
    assert (snap.cols, snap.rows) == (80, 24)
    with RecordingReader(io.BytesIO(bytes(data)), tail=tail) as r:
        chunks = list(r.chunks_newest_first())
        assert len(r.damage) == 1
    after = b"".join(e.data for c in reversed(chunks[:3]) for e in c if isinstance(e, Output))
    whole, late = TerminalEmulator(80, 24), TerminalEmulator(80, 24)
    whole.feed(after)  # the output after the gap: nothing from before it is replayed
    late.feed(snap.screen_bytes)
    assert late.snapshot() == whole.snapshot()
    assert b"line 2999" in snap.screen_bytes and len(snap.screen_bytes) <= len(after)


# -- watcher bounds --------------------------------------------------------------------------


async def test_slow_watcher_is_dropped_not_waited_for() -> None:
    watcher = Watcher(asyncio.get_running_loop(), max_events=10, max_bytes=1000)
    for i in range(5):
        watcher.event(Output(float(i), b"x"))
    assert [e.time for e in await watcher.next_batch()] == [0, 1, 2, 3, 4]
    for i in range(50):
        watcher.event(Output(float(i), b"y"))  # never blocks, never raises
    assert watcher.dropped is not None and "fell" in watcher.dropped
    assert await watcher.next_batch() == []
    other = Watcher(asyncio.get_running_loop())
    other.event(Output(0.0, b"a"))
    await asyncio.to_thread(other.closed, "exit")  # from a worker thread, like close()
    assert len(await other.next_batch()) == 1
    await asyncio.sleep(0)
    assert other.ended == "exit"


# -- access requests as the console sees them ---------------------------------------------

T0 = 1_800_000_000.0


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}", SecretBox(SecretBox.generate_key()))
    for name in ("web1", "web2"):
        s.add_target(
            name=name, kind=TargetKind.SSH, host="127.0.0.1", port=22, logins=["ops"],
            principal=name, host_keys=[], now=T0,
        )  # fmt: skip
    try:
        yield s
    finally:
        s.close()


def _flow(store: Store, clock: list[float]) -> RequestFlow:
    return RequestFlow(store, RequestsConfig(), lambda: clock[0], None, {"via": "test"})


def _wire(info: RequestInfo) -> RequestInfo:
    return request_from_wire(json.loads(json.dumps(request_to_wire(info))))


def test_requests_listed_with_who_may_approve_and_their_history(store: Store) -> None:
    clock = [T0]
    flow = _flow(store, clock)
    alice, _bob, _dan = (
        store.add_user(name=name, role=role, ssh_keys=[], totp_secret=None, now=T0)
        for name, role in (
            ("alice", Role.CONTRACTOR),
            ("bob", Role.APPROVER),
            ("dan", Role.APPROVER),
        )
    )
    store.set_target_request_policy("web2", approvals=2, approvers=None, max_request=None)
    done = flow.create(alice, targets=["web1"], duration=7200, reason="JIRA-1")
    clock[0] += 60
    two = flow.create(alice, targets=["web2"], duration=3600, reason="JIRA-2", options=["scp"])
    clock[0] += 60
    flow.approve(two.request.id, "bob", duration=1800, reason="half is enough")
    clock[0] += 60
    flow.approve(done.request.id, "dan", duration=3600)
    clock[0] += 60
    denied = flow.create(alice, targets=["web1"], duration=600, reason="JIRA-3")
    flow.deny(denied.request.id, "bob", "use the staging box")

    shown = [_wire(r) for r in list_requests(flow, pending_only=False, limit=10)]
    assert [(r.id, r.state) for r in shown] == [
        (two.request.id, "pending"),
        (denied.request.id, "denied"),
        (done.request.id, "approved"),
    ]
    pending = shown[0]
    assert pending.needed == 1 and pending.approvers == ("dan",)  # bob already approved
    assert pending.options == ("scp",) and pending.reason == "JIRA-2"
    assert pending.approvals[0].approver == "bob" and pending.approvals[0].duration == 1800
    assert [(h.who, h.what) for h in pending.history] == [
        ("alice", "asked for web2 with scp for 1h00m: JIRA-2"),
        ("bob", "approved for 30m00s: half is enough"),
    ]
    approved = shown[2]
    assert approved.needed == 0 and approved.approvers == () and len(approved.grants) == 1
    assert approved.history[-1].who == "dan"
    assert approved.history[-1].what == f"approved: grant #{approved.grants[0]}"
    assert shown[1].history[-1].what == "denied: use the staging box"
    assert [r.id for r in list_requests(flow, pending_only=True, limit=10)] == [two.request.id]
    stored = store.get_request(pending.id)
    assert stored is not None and request_of(flow, stored) == pending
    stored = store.get_request(done.request.id)
    assert stored is not None and history_of(stored) == approved.history
    assert [h.at for h in approved.history] == sorted(h.at for h in approved.history)


def test_malformed_requests_on_the_wire_are_refused() -> None:
    for bad, why in [
        ([], "RequestInfo object"),
        ({"targets": "web1"}, "must be a list"),
        ({"targets": [1]}, "list of strings"),
        ({"grants": ["x"]}, "grant ids"),
        ({"approvals": ["x"]}, "JSON object"),
        ({"id": 1}, "malformed RequestInfo"),
    ]:
        with pytest.raises(ControlError, match=why):
            request_from_wire(bad)
