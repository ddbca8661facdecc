"""The access-request workflow on a real SQLite store, with an injected clock (no sockets)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import time as dtime
from pathlib import Path

import pytest

from bastion.access_requests import RequestRefused
from bastion.request_flow import AUTO_APPROVER, RequestEvent, RequestFlow
from bastion.requests_config import AutoApproveRule, RequestsConfig, parse_requests
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import (
    Credset,
    GrantState,
    RequestKind,
    RequestState,
    Role,
    TargetKind,
    User,
)

T0 = 1_800_000_000.0  # a Wednesday, 2027-01-15T08:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}", SecretBox(SecretBox.generate_key()))
    for name in ("web1", "web2"):
        s.add_target(
            name=name, kind=TargetKind.SSH, host="127.0.0.1", port=22, logins=["ops"],
            principal=name, host_keys=[], now=T0,
        )  # fmt: skip
    s.add_target(
        name="db1", kind=TargetKind.POSTGRES, host="127.0.0.1", port=5432, logins=[],
        principal="db1", database="app",
        credsets=[Credset("readonly", "ro", "x"), Credset("readwrite", "rw", "y")], now=T0,
    )  # fmt: skip
    try:
        yield s
    finally:
        s.close()


def _user(store: Store, name: str, role: Role = Role.CONTRACTOR) -> User:
    return store.add_user(name=name, role=role, ssh_keys=[], totp_secret=None, now=T0)


def _flow(store: Store, clock: Clock, events: list[RequestEvent], **cfg: object) -> RequestFlow:
    config = parse_requests(dict(cfg)) if cfg else RequestsConfig()
    return RequestFlow(store, config, clock, events.append)


def test_request_then_approval_by_someone_else_makes_a_grant_from_approval(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    out = flow.create(alice, targets=["web1"], duration=7200, reason="JIRA-1")
    assert out.request.state is RequestState.PENDING and out.approvers == ("bob",)
    assert store.list_grants(user_id=alice.id) == []
    clock.now += 40 * 60  # approved 40 minutes late: still the full two hours
    done = flow.approve(out.request.id, "bob")
    assert done.request.state is RequestState.APPROVED
    (grant,) = done.grants
    assert grant.not_before == clock.now and grant.not_after == clock.now + 7200
    assert grant.request_id == out.request.id and grant.login == "ops"
    assert store.get_request(out.request.id).grant_ids == (grant.id,)  # type: ignore[union-attr]
    assert [e.event for e in events] == ["request.created", "request.approved"]
    assert events[-1].details()["decided_by"] == "bob"
    actions = [e.action for e in store.list_audit(limit=50)]
    assert "request.created" in actions and "request.approved" in actions


def test_nobody_approves_their_own_request_admins_included(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    root = _user(store, "root", Role.ADMIN)
    out = flow.create(root, targets=["web1"], duration=600, reason="self")
    with pytest.raises(RequestRefused, match="own request"):
        flow.approve(out.request.id, "root")
    contractor = _user(store, "carol")
    with pytest.raises(RequestRefused, match="not an approver"):
        flow.approve(out.request.id, "carol")
    assert contractor.role is Role.CONTRACTOR


def test_two_of_n_needs_two_distinct_approvers(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    store.set_target_request_policy("web2", approvals=2, approvers=None, max_request=None)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    _user(store, "dan", Role.APPROVER)
    out = flow.create(alice, targets=["web2"], duration=600, reason="x")
    first = flow.approve(out.request.id, "bob")
    assert first.request.state is RequestState.PENDING and first.needed == 1
    with pytest.raises(RequestRefused, match="already approved"):
        flow.approve(out.request.id, "bob")
    second = flow.approve(out.request.id, "dan")
    assert second.request.state is RequestState.APPROVED and len(second.grants) == 1


def test_narrowing_works_and_widening_is_refused(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    out = flow.create(
        alice, targets=["web1", "web2"], duration=3600, reason="x", options=["sftp", "scp"]
    )
    rid = out.request.id
    with pytest.raises(RequestRefused, match="never lengthen"):
        flow.approve(rid, "bob", duration=7200)
    with pytest.raises(RequestRefused, match="never add"):
        flow.approve(rid, "bob", targets=["web1", "db1"])
    with pytest.raises(RequestRefused, match="never add"):
        flow.approve(rid, "bob", options=["agent"])
    done = flow.approve(rid, "bob", duration=600, targets=["web2"], options=["sftp"])
    (grant,) = done.grants
    assert grant.target_name == "web2" and grant.options == frozenset({"sftp"})
    assert grant.not_after - grant.not_before == 600


def test_lapse_deny_and_drop_never_grant(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events, pending_ttl="10m")
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    lapsing = flow.create(alice, targets=["web1"], duration=600, reason="x").request
    denied = flow.create(alice, targets=["web2"], duration=600, reason="y").request
    flow.deny(denied.id, "bob", "not this week")
    clock.now += 601
    assert [r.id for r in flow.lapse_due()] == [lapsing.id]
    with pytest.raises(RequestRefused):
        flow.approve(lapsing.id, "bob")
    with pytest.raises(RequestRefused):
        flow.approve(denied.id, "bob")
    assert store.list_grants(user_id=alice.id) == []
    assert store.get_request(denied.id).decision_reason == "not this week"  # type: ignore[union-attr]
    ok = flow.create(alice, targets=["web1"], duration=600, reason="z")
    (grant,) = flow.approve(ok.request.id, "bob").grants
    dropped = flow.drop(alice, grant.id)
    assert dropped.state is GrantState.REVOKED
    assert [e.event for e in events][-1] == "request.dropped"


def test_break_glass_is_immediate_capped_and_unreviewed_until_reviewed(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events, break_glass_max="30m")
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    out = flow.break_glass(alice, targets=["web1"], reason="prod down", duration=7200)
    (grant,) = out.grants
    assert grant.not_after - grant.not_before == 1800 and grant.not_before == clock.now
    assert out.request.kind is RequestKind.BREAK_GLASS and out.approvers == ("bob",)
    assert [r.id for r in store.list_requests(unreviewed=True)] == [out.request.id]
    with pytest.raises(RequestRefused, match="own"):
        flow.review(out.request.id, "alice", "fine")
    flow.review(out.request.id, "bob", "checked the recording")
    assert store.list_requests(unreviewed=True) == []
    assert events[0].event == "request.break-glass"


def test_extension_moves_the_grant_end(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    (grant,) = flow.approve(
        flow.create(alice, targets=["web1"], duration=600, reason="x").request.id, "bob"
    ).grants
    ext = flow.extend(alice, grant_id=grant.id, duration=1200, reason="more")
    clock.now += 300
    (extended,) = flow.approve(ext.request.id, "bob").grants
    assert extended.id == grant.id and extended.not_after == grant.not_after + 1200
    assert events[-1].event == "request.extended"


def test_database_requests_name_a_credential_set(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    with pytest.raises(RequestRefused, match="credential set"):
        flow.create(alice, targets=["db1"], duration=600, reason="x")
    out = flow.create(alice, targets=["db1"], duration=600, reason="x", login="readonly")
    (grant,) = flow.approve(out.request.id, "bob").grants
    assert grant.credset == "readonly" and grant.login is None


def test_auto_approve_inside_hours_and_not_outside(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    rule = AutoApproveRule(
        targets=("web*",), groups=("sre",), hours=(dtime(8, 0), dtime(18, 0)), max=3600
    )
    flow = RequestFlow(store, RequestsConfig(auto_approve=(rule,)), clock, events.append)
    alice = _user(store, "alice")
    store.set_user_groups(alice.id, ["sre"])
    clock.now = T0 + 2 * 3600  # 10:00 UTC
    inside = flow.create(alice, targets=["web1"], duration=600, reason="x")
    assert inside.request.state is RequestState.APPROVED
    assert inside.request.decided_by == AUTO_APPROVER and len(inside.grants) == 1
    clock.now = T0 + 12 * 3600  # 20:00 UTC
    outside = flow.create(alice, targets=["web1"], duration=600, reason="y")
    assert outside.request.state is RequestState.PENDING
    too_long = flow.create(alice, targets=["web1"], duration=7200, reason="z")
    assert too_long.request.state is RequestState.PENDING


def test_requests_longer_than_the_maximum_are_refused(store: Store) -> None:
    flow = _flow(store, Clock(), [], max_duration="2h")
    alice = _user(store, "alice")
    with pytest.raises(RequestRefused, match="at most 2h"):
        flow.create(alice, targets=["web1"], duration=3 * 3600, reason="x")
    store.set_target_request_policy("web1", approvals=None, approvers=None, max_request=600)
    with pytest.raises(RequestRefused, match="at most 10m"):
        flow.create(alice, targets=["web1"], duration=601, reason="x")


def test_clock_is_real_time_compatible() -> None:
    assert time.gmtime(T0).tm_hour == 8
