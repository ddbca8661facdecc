"""Effective access on a real SQLite store, the clock passed by hand.

Each case builds the state a contractor could be in (grants direct, from a
request, not started, ended, revoked; the user disabled, locked, ended; a
target removed) and checks the verdict, the way in and the words. The node's
side of the same question is ``test_effective_access_live.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.access_report import access_from_wire, access_to_wire, describe
from bastion.cli import main
from bastion.effective_access import user_access, who_can_reach
from bastion.errors import NotFound
from bastion.request_flow import RequestFlow
from bastion.requests_config import RequestsConfig
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import Credset, Grant, Role, TargetKind, User

T0 = 1_750_000_000.0
HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path}/state.db", SecretBox(SecretBox.generate_key())) as s:
        for name in ("web1", "web2"):
            s.add_target(
                name=name, kind=TargetKind.SSH, host="127.0.0.1", port=22,
                logins=["deploy", "root"], principal=f"p-{name}", now=T0 - HOUR,
            )  # fmt: skip
        s.add_target(
            name="db1", kind=TargetKind.POSTGRES, host="127.0.0.1", port=5432, logins=[],
            principal="", database="app", now=T0 - HOUR,
            credsets=[Credset("ro", "reader", "x"), Credset("rw", "writer", "y")],
        )  # fmt: skip
        yield s


def user(store: Store, name: str = "alice", totp: str | None = "JBSWY3DPEHPK3PXP") -> User:
    return store.add_user(name, Role.CONTRACTOR, [], totp, T0 - HOUR)


def grant(
    store: Store,
    who: User,
    target: str,
    *,
    start: float = T0 - 60,
    end: float = T0 + HOUR,
    login: str | None = "deploy",
    credset: str | None = None,
    options: frozenset[str] = frozenset(),
) -> Grant:
    t = store.get_target(target)
    assert t is not None
    return store.add_grant(
        user_id=who.id, target_id=t.id, login=login, credset=credset, not_before=start,
        not_after=end, reason="TICKET-1", requested_by="admin", approved_by="admin",
        options=options, now=T0 - HOUR,
    )  # fmt: skip


def test_a_direct_grant_is_a_way_in_until_its_end(store: Store) -> None:
    alice = user(store)
    g = grant(store, alice, "web1", options=frozenset({"sftp"}))
    a = user_access(store, "alice", T0)
    assert a.login_refused is None and a.state == "active"
    (t,) = a.targets
    assert t.target == "web1" and t.reachable and t.blocked == ()
    (way,) = t.ways
    assert (way.login, way.grant, way.until) == ("deploy", g.id, T0 + HOUR)
    (why,) = t.grants
    assert why.id == g.id and why.profile is None and why.request is None
    assert why.state == "usable" and why.why_not == "" and why.options == ("sftp",)
    assert "web1 [ssh] YES: as deploy under grant #" in "\n".join(describe(a))


def test_each_granted_login_is_a_way_and_the_default_is_admissions_pick(store: Store) -> None:
    alice = user(store)
    short = grant(store, alice, "web1", login="root", end=T0 + 600)
    long = grant(store, alice, "web1", login="deploy")
    (t,) = user_access(store, "alice", T0).targets
    assert [(w.login, w.grant) for w in t.ways] == [("deploy", long.id), ("root", short.id)]


def test_a_grant_not_yet_started_says_when_it_starts(store: Store) -> None:
    alice = user(store)
    g = grant(store, alice, "web1", start=T0 + HOUR, end=T0 + 2 * HOUR)
    (t,) = user_access(store, "alice", T0).targets
    assert not t.reachable and t.ways == ()
    assert t.blocked == (f"grant #{g.id} starts at 2025-06-15 16:06:40 UTC",)
    assert t.grants[0].state == "not-started"


@pytest.mark.parametrize("state", ["disabled", "locked", "ended", "no-mfa"])
def test_a_user_who_cannot_log_in_reaches_nothing_and_is_told_why(store: Store, state: str) -> None:
    alice = user(store, totp=None if state == "no-mfa" else "JBSWY3DPEHPK3PXP")
    g = grant(store, alice, "web1")
    if state == "disabled":
        store.set_user_disabled("alice", True)
    elif state == "locked":
        store.lock_user(alice.id, T0 + 600)
    elif state == "ended":
        store.set_engagement("alice", sponsor="sam", until=T0 - 1)
    a = user_access(store, "alice", T0)
    words = {
        "disabled": "user alice is disabled; ask an admin",
        "locked": "user alice is locked for 10 more minute(s)",
        "ended": "the engagement of alice ended on 2025-06-15 15:06:39 UTC; ask sam (your sponsor)",
        "no-mfa": "user alice has no TOTP enrolment",
    }[state]
    assert a.login_refused is not None and words in a.login_refused
    (t,) = a.targets
    assert not t.reachable and words in t.blocked[0]
    assert [w.grant for w in t.ways] == [g.id]  # what the grant would allow, once let in
    assert a.state == {"no-mfa": "active"}.get(state, state)


def test_ended_and_revoked_grants_and_removed_targets_only_with_all(store: Store) -> None:
    alice = user(store)
    old = grant(store, alice, "web1", start=T0 - 2 * HOUR, end=T0 - HOUR)
    cut = grant(store, alice, "web2")
    store.revoke_grant(cut.id, "bob", T0 - 30)
    gone = grant(store, alice, "db1", login=None, credset="ro")
    store.remove_target("db1", T0 - 10)
    assert user_access(store, "alice", T0).targets == ()
    a = user_access(store, "alice", T0, include_all=True)
    by_name = {t.target: t for t in a.targets}
    assert set(by_name) == {"web1", "web2", "db1"}
    assert by_name["web1"].blocked == (f"grant #{old.id} expired at 2025-06-15 14:06:40 UTC",)
    assert by_name["web2"].blocked[0].startswith(f"grant #{cut.id} was revoked at ")
    assert by_name["web2"].blocked[0].endswith(" by bob")
    db = by_name["db1"]
    assert db.removed and not db.reachable and db.blocked == ("target db1 was removed",)
    assert db.grants[0].id == gone.id and db.grants[0].state == "revoked"
    assert "target-removed" in db.grants[0].why_not
    assert not any(t.reachable for t in a.targets)


def test_a_database_reached_with_each_granted_credential_set(store: Store) -> None:
    alice = user(store)
    ro = grant(store, alice, "db1", login=None, credset="ro")
    rw = grant(store, alice, "db1", login=None, credset="rw", end=T0 + 600)
    (t,) = user_access(store, "alice", T0).targets
    assert t.kind == "postgres" and t.reachable
    assert [(w.login, w.grant) for w in t.ways] == [("ro", ro.id), ("rw", rw.id)]
    assert "credential set ro under grant" in describe(user_access(store, "alice", T0))[1]


def test_a_break_glass_grant_names_its_request_and_pending_requests_are_listed(
    store: Store,
) -> None:
    alice = user(store)
    flow = RequestFlow(store, RequestsConfig(), lambda: T0)
    glass = flow.break_glass(alice, targets=["web1"], reason="prod down", login="deploy")
    waiting = flow.create(alice, targets=["web2"], duration=HOUR, reason="deploy")
    a = user_access(store, "alice", T0)
    (t,) = a.targets
    assert t.reachable
    (why,) = t.grants
    assert why.request == glass.request.id and why.request_kind == "break-glass"
    assert a.pending_requests == (waiting.request.id,)
    assert f"from break-glass request #{glass.request.id}" in "\n".join(describe(a))


def test_who_can_reach_a_target_reachable_first(store: Store) -> None:
    alice, bob, carol = user(store), user(store, "bob"), user(store, "carol")
    grant(store, alice, "web1")
    grant(store, bob, "web1")
    grant(store, carol, "web2")
    store.set_user_disabled("alice", True)
    found = who_can_reach(store, "web1", T0)
    assert [(a.user, a.targets[0].reachable) for a in found] == [("bob", True), ("alice", False)]
    assert all(len(a.targets) == 1 and a.targets[0].target == "web1" for a in found)
    with pytest.raises(NotFound, match="no target named 'web9'"):
        who_can_reach(store, "web9", T0)
    with pytest.raises(NotFound, match="no user named 'dave'"):
        user_access(store, "dave", T0)


def test_the_wire_form_round_trips(store: Store) -> None:
    alice = user(store)
    flow = RequestFlow(store, RequestsConfig(), lambda: T0)
    flow.break_glass(alice, targets=["web1"], reason="prod down", login="deploy")
    grant(store, alice, "db1", login=None, credset="ro", options=frozenset())
    grant(store, alice, "web2", options=frozenset({"scp", "sftp"}), start=T0 + 5)
    a = user_access(store, "alice", T0, include_all=True)
    assert access_from_wire(json.loads(json.dumps(access_to_wire(a)))) == a
    with pytest.raises(ValueError, match="'targets' must be a list"):
        access_from_wire({**access_to_wire(a), "targets": "web1"})


# --- the command ------------------------------------------------------------------------


@pytest.fixture()
def node_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--dir", str(tmp_path), "--listen", "127.0.0.1:2299"]) == 0
    capsys.readouterr()
    return tmp_path


def cli(node_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["access", *args, "--config", str(node_dir / "bastion.toml")])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_prints_text_and_json(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.config import load_config

    config = load_config(node_dir / "bastion.toml")
    with open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file)) as s:
        s.add_target(
            name="web1", kind=TargetKind.SSH, host="127.0.0.1", port=22, logins=["deploy"],
            principal="p", now=T0,
        )  # fmt: skip
        alice = user(s)
        g = grant(s, alice, "web1", start=T0, end=T0 + 100 * 365 * 86400)
    code, out, err = cli(node_dir, capsys, "alice")
    assert code == 0, err
    assert out.splitlines()[0] == "alice (contractor, active)"
    assert f"web1 [ssh] YES: as deploy under grant #{g.id} until 2125-" in out
    code, out, _ = cli(node_dir, capsys, "alice", "--json")
    assert code == 0 and json.loads(out)["targets"][0]["ways"][0]["grant"] == g.id
    code, out, _ = cli(node_dir, capsys, "--target", "web1")
    assert code == 0 and out.startswith("alice (contractor, active) YES: as deploy under grant")
    code, out, _ = cli(node_dir, capsys, "--target", "web1", "--json")
    assert [a["user"] for a in json.loads(out)] == ["alice"]
    code, _, err = cli(node_dir, capsys)
    assert code == 2 and "name a user" in err
    code, _, err = cli(node_dir, capsys, "alice", "--target", "web1")
    assert code == 2 and "name a user" in err
    code, _, err = cli(node_dir, capsys, "nobody")
    assert code == 1 and "no user named 'nobody'" in err


def test_a_profile_grant_reaches_what_its_selector_matches_now(store: Store) -> None:
    alice = user(store)
    profile = store.add_profile(
        name="staging-web", selector="env=staging,role=web", logins=["deploy"],
        created_by="admin", now=T0 - HOUR,
    )  # fmt: skip
    store.set_target_labels("web1", {"env": "staging", "role": "web"})
    store.set_target_labels("web2", {"env": "prod", "role": "web"})
    g = store.add_grant(
        user_id=alice.id, target_id=None, profile_id=profile.id, login=None, credset=None,
        not_before=T0 - 60, not_after=T0 + HOUR, reason="TICKET-2", requested_by="admin",
        approved_by="admin", options=frozenset(), now=T0 - HOUR,
    )  # fmt: skip
    (t,) = user_access(store, "alice", T0).targets
    assert t.target == "web1" and t.reachable and t.labels == {"env": "staging", "role": "web"}
    assert [(w.login, w.grant) for w in t.ways] == [("deploy", g.id)]
    (why,) = t.grants
    assert why.profile == "staging-web" and why.selector == "env=staging,role=web"
    assert "via profile staging-web (env=staging,role=web)" in "\n".join(
        describe(user_access(store, "alice", T0))
    )
    store.set_target_labels("web2", {"env": "staging"})  # labelled later: covered at once
    assert {t.target for t in user_access(store, "alice", T0).targets} == {"web1", "web2"}
    store.set_target_labels("web1", {}, remove=["env"])  # label removed: access to it ends
    assert [t.target for t in user_access(store, "alice", T0).targets] == ["web2"]
    assert [a.user for a in who_can_reach(store, "web1", T0)] == []
    assert [a.user for a in who_can_reach(store, "web2", T0, include_all=True)] == ["alice"]
    # with --all the stored grant (no target) is not mistaken for a removed target
    assert all(not t.removed for t in user_access(store, "alice", T0, include_all=True).targets)
