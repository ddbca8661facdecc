"""Requests naming an access profile: the profile's policy, one profile grant on approval.

The workflow on a real SQLite store with an injected clock (no sockets), like
``test_request_flow.py``; the live flow over SSH is in ``test_ssh_profile_requests.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.access_requests import RequestRefused
from bastion.db_tokens import DbTokenDenied, issue_for_request
from bastion.request_flow import AUTO_APPROVER, RequestEvent, RequestFlow
from bastion.requests_config import AutoApproveRule, RequestsConfig, parse_requests
from bastion.secretbox import SecretBox
from bastion.ssh.request_commands import CommandError, NewRequest, parse, pending_text
from bastion.store import Store, open_store
from bastion.store.models import Credset, GrantState, RequestKind, RequestState, Role, TargetKind
from bastion.store.models import User as UserRow

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}", SecretBox(SecretBox.generate_key()))
    for name, env in (("web1", "staging"), ("web2", "staging"), ("web9", "prod")):
        s.add_target(
            name=name, kind=TargetKind.SSH, host="127.0.0.1", port=22, logins=["ops", "deploy"],
            principal=name, host_keys=[], now=T0, labels={"env": env, "role": "web"},
        )  # fmt: skip
    s.add_target(
        name="db1", kind=TargetKind.POSTGRES, host="127.0.0.1", port=5432, logins=[],
        principal="db1", database="app", credsets=[Credset("readonly", "ro", "x")], now=T0,
        labels={"env": "staging", "role": "db"},
    )  # fmt: skip
    s.add_profile(
        name="staging-web", selector="env=staging,role=web", logins=["deploy"],
        options=["sftp"], created_by="root", now=T0,
    )  # fmt: skip
    try:
        yield s
    finally:
        s.close()


def _user(store: Store, name: str, role: Role = Role.CONTRACTOR) -> UserRow:
    return store.add_user(name=name, role=role, ssh_keys=[], totp_secret=None, now=T0)


def _flow(
    store: Store, clock: Clock, events: list[RequestEvent] | None = None, **cfg: object
) -> RequestFlow:
    config = parse_requests(dict(cfg)) if cfg else RequestsConfig()
    return RequestFlow(store, config, clock, (events if events is not None else []).append)


def test_approval_makes_one_profile_grant_that_reaches_what_the_labels_say(store: Store) -> None:
    clock, events = Clock(), list[RequestEvent]()
    flow = _flow(store, clock, events)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    out = flow.create(alice, profile="staging-web", duration=3600, reason="JIRA-7")
    r = out.request
    assert (r.profile, r.targets, r.state) == ("staging-web", (), RequestState.PENDING)
    assert store.get_request(r.id).profile == "staging-web"  # type: ignore[union-attr]
    assert flow.reach_of(r) == ("web1", "web2") and out.approvers == ("bob",)
    assert store.list_grants(user_id=alice.id) == []
    clock.now += 600
    (grant,) = flow.approve(r.id, "bob").grants
    assert grant.target_id is None and grant.profile_name == "staging-web"
    assert (grant.request_id, grant.approved_by, grant.state) == (r.id, "bob", GrantState.ACTIVE)
    assert (grant.not_before, grant.not_after) == (clock.now, clock.now + 3600)
    assert grant.options == frozenset()  # only what was asked for, as for targets
    reached = store.list_grants(user_id=alice.id, active_at=clock.now, expand=True)
    assert {(g.target_name, g.login) for g in reached} == {("web1", "deploy"), ("web2", "deploy")}
    store.set_target_labels("web9", {"env": "staging"})  # labelled later: reached, same grant
    reached = store.list_grants(user_id=alice.id, active_at=clock.now, expand=True)
    assert {g.target_name for g in reached} == {"web1", "web2", "web9"}
    assert {g.id for g in reached} == {grant.id}
    assert [e.event for e in events] == ["request.created", "request.approved"]
    assert events[0].details()["profile"] == "staging-web"
    rows = {e.action: e for e in store.list_audit(limit=20)}
    assert rows["request.created"].subject == "profile staging-web"
    assert rows["request.created"].details["reaches"] == ["web1", "web2"]
    assert rows["request.approved"].details["reaches"] == ["web1", "web2"]


def test_the_profiles_approvals_and_approvers_decide(store: Store) -> None:
    clock = Clock()
    flow = _flow(store, clock)
    store.set_profile("staging-web", approvals=2, approvers=["bob", "@dba"])
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    carol = _user(store, "carol", Role.APPROVER)
    dan = _user(store, "dan", Role.ADMIN)
    store.set_user_groups(carol.id, ["dba"])
    out = flow.create(alice, profile="staging-web", duration=600, reason="x")
    assert out.approvers == ("bob", "carol") and out.needed == 2
    with pytest.raises(RequestRefused, match="needs an approver from: @dba, bob"):
        flow.approve(out.request.id, dan.name)  # an admin, but not named by the profile
    first = flow.approve(out.request.id, "bob")
    assert first.request.state is RequestState.PENDING and first.needed == 1
    with pytest.raises(RequestRefused, match="already approved"):
        flow.approve(out.request.id, "bob")
    done = flow.approve(out.request.id, "carol")
    assert done.request.state is RequestState.APPROVED and len(done.grants) == 1
    mine = flow.create(carol, profile="staging-web", duration=600, reason="self")
    with pytest.raises(RequestRefused, match="own request"):
        flow.approve(mine.request.id, "carol")


def test_the_profiles_maximum_caps_requests_and_the_default_still_applies(store: Store) -> None:
    flow = _flow(store, Clock(), max_duration="2h")
    alice = _user(store, "alice")
    with pytest.raises(RequestRefused, match="at most 2h.* profile staging-web"):
        flow.create(alice, profile="staging-web", duration=3 * 3600, reason="x")
    store.set_profile("staging-web", max_duration=1800)
    with pytest.raises(RequestRefused, match="at most 30m"):
        flow.create(alice, profile="staging-web", duration=1801, reason="x")
    assert flow.create(alice, profile="staging-web", duration=1800, reason="x").needed == 1


def test_nothing_beyond_the_profile_and_no_target_narrowing(store: Store) -> None:
    clock = Clock()
    flow = _flow(store, clock)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    with pytest.raises(RequestRefused, match="does not allow agent"):
        flow.create(alice, profile="staging-web", duration=600, reason="x", options=["agent"])
    with pytest.raises(RequestRefused, match="allows the logins deploy, not 'ops'"):
        flow.create(alice, profile="staging-web", duration=600, reason="x", login="ops")
    with pytest.raises(RequestRefused, match="no profile named 'nope'"):
        flow.create(alice, profile="nope", duration=600, reason="x")
    with pytest.raises(RequestRefused, match="not both"):
        flow.create(alice, profile="staging-web", targets=["web1"], duration=600, reason="x")
    out = flow.create(
        alice, profile="staging-web", duration=3600, reason="x", options=["sftp"], login="deploy"
    )
    with pytest.raises(RequestRefused, match="for profile staging-web, not for targets"):
        flow.approve(out.request.id, "bob", targets=["web1"])
    (grant,) = flow.approve(out.request.id, "bob", duration=600, options=[]).grants
    assert grant.not_after == clock.now + 600 and grant.options == frozenset()
    assert grant.login == "deploy"


def test_denied_or_removed_profile_grants_nothing(store: Store) -> None:
    flow = _flow(store, Clock())
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    denied = flow.create(alice, profile="staging-web", duration=600, reason="x")
    assert flow.deny(denied.request.id, "bob", "not today").request.state is RequestState.DENIED
    with pytest.raises(RequestRefused, match="denied, not pending"):
        flow.approve(denied.request.id, "bob")
    gone = flow.create(alice, profile="staging-web", duration=600, reason="y")
    store.remove_profile("staging-web", T0)
    with pytest.raises(RequestRefused, match="no profile named 'staging-web' \\(any more\\)"):
        flow.approve(gone.request.id, "bob")
    assert flow.reach_of(gone.request) == ()
    flow.deny(gone.request.id, "bob", "profile gone")  # still deniable
    assert store.list_grants(user_id=alice.id) == []


def test_auto_approve_names_profiles_and_target_globs_never_match_them(store: Store) -> None:
    clock = Clock()
    anything = AutoApproveRule(targets=("*",), max=3600)
    flow = RequestFlow(store, RequestsConfig(auto_approve=(anything,)), clock)
    alice = _user(store, "alice")
    assert flow.create(alice, targets=["web1"], duration=600, reason="t").grants
    pending = flow.create(alice, profile="staging-web", duration=600, reason="p")
    assert pending.request.state is RequestState.PENDING
    config = parse_requests({"auto_approve": [{"profiles": ["staging-*"], "max": "1h"}]})
    (rule,) = config.auto_approve
    assert rule.targets == () and "profile staging-*" in rule.describe()
    flow = RequestFlow(store, config, clock)
    auto = flow.create(alice, profile="staging-web", duration=600, reason="p")
    assert auto.request.state is RequestState.APPROVED
    assert auto.request.decided_by == AUTO_APPROVER and auto.grants[0].profile_name
    assert flow.create(alice, targets=["web1"], duration=600, reason="t").grants == ()


def test_a_profile_grant_is_extended_within_the_profiles_maximum(store: Store) -> None:
    clock = Clock()
    flow = _flow(store, clock)
    store.set_profile("staging-web", max_duration=3600)
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    out = flow.create(alice, profile="staging-web", duration=1800, reason="x")
    (grant,) = flow.approve(out.request.id, "bob").grants
    ext = flow.extend(alice, grant_id=grant.id, duration=1200, reason="more")
    assert ext.request.kind is RequestKind.EXTEND and ext.request.profile == "staging-web"
    clock.now += 600
    (longer,) = flow.approve(ext.request.id, "bob").grants
    assert longer.id == grant.id and longer.not_after == grant.not_after + 1200
    ext = flow.extend(alice, grant_id=grant.id, duration=3600, reason="much more")
    (capped,) = flow.approve(ext.request.id, "bob").grants
    assert capped.not_after == clock.now + 3600  # at most the profile's maximum from now


def test_database_targets_reached_through_a_profile_get_their_only_credential_set(
    store: Store,
) -> None:
    store.add_profile(name="staging-db", selector="env=staging,role=db", created_by="r", now=T0)
    flow = _flow(store, Clock())
    alice = _user(store, "alice")
    _user(store, "bob", Role.APPROVER)
    out = flow.create(alice, profile="staging-db", duration=600, reason="x")
    (grant,) = flow.approve(out.request.id, "bob").grants
    (view,) = store.list_grants(user_id=alice.id, expand=True)
    assert (view.id, view.target_name, view.credset, view.login) == (
        grant.id, "db1", "readonly", None,
    )  # fmt: skip


def test_ssh_words_for_a_profile_request() -> None:
    cmd = parse("request", "--profile prod-db --for 1h --reason rotate keys --wait", T0)
    assert cmd == NewRequest((), 3600.0, "rotate keys", wait=True, profile="prod-db")
    for text, says in (
        ("web1 --profile p --for 1h --reason x", "not both"),
        ("--profile p --break-glass --reason x", "not a --profile"),
        ("--profile 'a;b' --for 1h --reason x", "not a profile name"),
    ):
        with pytest.raises(CommandError, match=says):
            parse("request", text, T0)


def test_pending_listing_shows_what_a_profile_reaches_now(store: Store) -> None:
    flow = _flow(store, Clock())
    alice = _user(store, "alice")
    out = flow.create(alice, profile="staging-web", duration=600, reason="why")
    text = pending_text([(out.request, 1)], {out.request.id: flow.reach_of(out.request)})
    assert "profile staging-web (reaches now: web1, web2) for 10m" in text


def test_db_token_under_a_profile_without_a_credential_set(store: Store) -> None:
    """One set: it is the one; several: refused, naming them (never a pick for the user)."""
    store.add_target(
        name="db2", kind=TargetKind.POSTGRES, host="127.0.0.1", port=5432, logins=[],
        principal="db2", database="app", now=T0, labels={"env": "staging", "role": "db"},
        credsets=[Credset("readonly", "ro", "x"), Credset("readwrite", "rw", "y")],
    )  # fmt: skip
    store.add_profile(name="staging-db", selector="env=staging,role=db", created_by="r", now=T0)
    alice = _user(store, "alice")
    grant = store.add_grant(
        user_id=alice.id, target_id=None, profile_id=store.get_profile("staging-db").id,  # type: ignore[union-attr]
        login=None, credset=None, not_before=T0, not_after=T0 + 3600, reason="x",
        requested_by="r", approved_by="r", options=(), now=T0,
    )  # fmt: skip
    common = dict(user=alice, credset=None, now=T0 + 1, ttl=600.0, created_from="test")
    target, issued = issue_for_request(store, target_name="db1", **common)  # type: ignore[arg-type]
    assert (issued.grant.id, issued.record.credset, target.name) == (grant.id, "readonly", "db1")
    with pytest.raises(DbTokenDenied, match=r"profile staging-db\) names no credential set"):
        issue_for_request(store, target_name="db2", **common)  # type: ignore[arg-type]
