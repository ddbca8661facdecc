"""The access-request admin CLI, run as a subprocess against a real ``bastion init`` directory.

Requests are created through ``RequestFlow`` on the same SQLite store (what the SSH
front end does); everything else goes through ``python -m bastion``. The webhook
tests use a real ``http.server`` on loopback.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.config import load_config
from bastion.request_flow import RequestFlow
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from tests.bastion.notify.receivers import closed_port, http_receiver
from tests.bastion.test_cli import open_ended

ROOT = Path(__file__).resolve().parents[2]


def bastion(node: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """``python -m bastion ARGS --config NODE/bastion.toml``, expecting exit ``code``."""
    r = subprocess.run(
        [sys.executable, "-m", "bastion", *args, "--config", str(node / "bastion.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "BASTION_ACTOR"},
    )
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    return r


def as_json(node: Path, *args: str) -> Any:
    return json.loads(bastion(node, *args, "--json").stdout)


def refused(node: Path, *args: str) -> str:
    """A refusal: exit 1, nothing on stdout, one line on stderr (returned)."""
    r = bastion(node, *args, code=1)
    assert r.stdout == "" and r.stderr.startswith("bastion: ") and r.stderr.count("\n") == 1
    return r.stderr


@contextmanager
def store_of(node: Path) -> Iterator[tuple[Store, RequestFlow]]:
    config = load_config(node / "bastion.toml")
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    try:
        yield store, RequestFlow(store, config.requests)
    finally:
        store.close()


def ask(node: Path, user: str, targets: list[str], duration: float = 7200, **kw: Any) -> int:
    """``user`` requests access the way ``ssh BASTION request`` does; returns the id."""
    with store_of(node) as (store, flow):
        found = store.get_user(user)
        assert found is not None
        out = flow.create(found, targets=targets, duration=duration, reason=f"{user} needs", **kw)
        return out.request.id


def audit(node: Path, prefix: str) -> list[dict[str, Any]]:
    """The audit rows whose action starts with ``prefix`` (read from the store)."""
    with store_of(node) as (store, _flow):
        return [asdict(e) for e in store.list_audit(action_prefix=prefix)]


def state(node: Path, rid: int) -> str:
    """A request's state (read from the store)."""
    with store_of(node) as (store, _flow):
        found = store.get_request(rid)
        assert found is not None
        return found.state.value


def assert_cli_origin(row: dict[str, Any]) -> None:
    d = row["details"]
    assert (d["via"], d["uid"], d["login"]) == ("cli", os.getuid(), getpass.getuser()), row


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bastion with alice (contractor), bob and dave (approvers in sre), carol (admin),
    eve (auditor) and targets web1, web2: built once, copied per test."""
    node = tmp_path_factory.mktemp("template")
    subprocess.run(
        [sys.executable, "-m", "bastion", "init", "--dir", str(node), "--listen",
         "127.0.0.1:2299"],
        check=True, capture_output=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    open_ended(node)
    key = node / "key.pub"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh"))
    for name, role, groups in [
        ("alice", "contractor", []),
        ("bob", "approver", ["sre"]),
        ("carol", "admin", []),
        ("dave", "approver", ["sre", "oncall"]),
        ("eve", "auditor", []),
    ]:
        flags = [f"--group={g}" for g in groups]
        bastion(node, "user", "add", name, "--role", role, "--key", str(key), *flags)
    for name in ("web1", "web2"):
        bastion(node, "target", "add", name, "--ssh", "127.0.0.1:22", "--login", "ops",
                "--host-key", str(key))  # fmt: skip
    return node


@pytest.fixture()
def node(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "node"
    shutil.copytree(template, copy)
    return copy


# --- deciding with --as --------------------------------------------------------------------


def test_approve_as_an_approver_makes_the_grant_with_the_request_id(node: Path) -> None:
    rid = ask(node, "alice", ["web1"])
    (row,) = as_json(node, "request", "list", "--pending")
    assert (row["id"], row["state"], row["user_name"]) == (rid, "pending", "alice")
    assert row["approvals_needed"] == 1
    line = bastion(node, "request", "list").stdout
    assert f"#{rid}" in line and "pending" in line and "approvals 0/1" in line

    out = bastion(node, "request", "approve", str(rid), "--as", "bob", "--reason", "ok").stdout
    assert f"request #{rid} approved by bob" in out and "alice -> web1 as ops" in out
    assert as_json(node, "request", "list", "--pending") == []

    (grant,) = as_json(node, "grant", "list")
    assert grant["request_id"] == rid and grant["approved_by"] == "bob"
    assert grant["not_after"] - grant["not_before"] == pytest.approx(7200)
    shown = as_json(node, "request", "show", f"#{rid}")
    assert shown["state"] == "approved" and shown["grant_ids"] == [grant["id"]]
    assert [g["id"] for g in shown["grants"]] == [grant["id"]]
    assert [(e["event"], e["by"]) for e in shown["history"]] == [
        ("created", "alice"), ("approval", "bob"), ("approved", "bob"),
    ]  # fmt: skip
    text = bastion(node, "request", "show", str(rid)).stdout
    assert f"grant #{grant['id']}: alice -> web1" in text and "approval by bob: ok" in text

    (approved,) = audit(node, "request.approved")
    assert (approved["actor"], approved["subject"]) == ("bob", f"request #{rid}")
    assert approved["details"]["final"] is True and approved["details"]["grants"] == [grant["id"]]
    assert_cli_origin(approved)


def test_deny_with_a_reason_then_nothing_more_is_decided(node: Path) -> None:
    rid = ask(node, "alice", ["web1"])
    out = bastion(node, "request", "deny", str(rid), "--as", "carol", "--reason", "no ticket")
    assert f"request #{rid} of alice denied by carol" in out.stdout
    shown = as_json(node, "request", "show", str(rid))
    assert (shown["state"], shown["decided_by"], shown["decision_reason"]) == (
        "denied", "carol", "no ticket",
    )  # fmt: skip
    assert "denied" in refused(node, "request", "approve", str(rid), "--as", "bob")
    assert as_json(node, "grant", "list") == []
    (row,) = audit(node, "request.denied")
    assert row["actor"] == "carol" and row["details"]["reason"] == "no ticket"
    assert_cli_origin(row)


def test_break_glass_is_listed_unreviewed_until_reviewed(node: Path) -> None:
    with store_of(node) as (store, flow):
        alice = store.get_user("alice")
        assert alice is not None
        rid = flow.break_glass(alice, targets=["web2"], reason="prod down").request.id
    (row,) = as_json(node, "request", "list", "--unreviewed")
    assert (row["id"], row["kind"], row["state"]) == (rid, "break-glass", "approved")
    assert "(unreviewed)" in bastion(node, "request", "list").stdout
    assert "own" in refused(node, "request", "review", str(rid), "--as", "alice", "--note", "x")
    assert "not an approver" in refused(
        node, "request", "review", str(rid), "--as", "eve", "--note", "x"
    )
    out = bastion(node, "request", "review", f"#{rid}", "--as", "dave", "--note", "INC-7 fine")
    assert "reviewed by dave" in out.stdout
    assert as_json(node, "request", "list", "--unreviewed") == []
    shown = as_json(node, "request", "show", str(rid))
    assert (shown["reviewed_by"], shown["review_note"]) == ("dave", "INC-7 fine")
    assert shown["history"][-1]["event"] == "reviewed"
    assert "not a break-glass request awaiting review" in refused(
        node, "request", "review", str(rid), "--as", "bob", "--note", "again"
    )
    (row,) = audit(node, "request.reviewed")
    assert row["actor"] == "dave" and row["details"]["note"] == "INC-7 fine"
    assert_cli_origin(row)


def test_self_approval_and_non_approvers_are_refused(node: Path) -> None:
    mine = ask(node, "carol", ["web1"])  # an admin's own request
    assert "nobody approves their own request" in refused(
        node, "request", "approve", str(mine), "--as", "carol"
    )
    theirs = ask(node, "alice", ["web1"])
    assert "nobody approves their own request" in refused(
        node, "request", "approve", str(theirs), "--as", "alice"
    )
    assert "eve is not an approver (role auditor)" in refused(
        node, "request", "approve", str(theirs), "--as", "eve"
    )
    assert "no user named 'mallory'" in refused(
        node, "request", "approve", str(theirs), "--as", "mallory"
    )
    assert "no request #999" in refused(node, "request", "approve", "999", "--as", "bob")
    assert "not a request number" in bastion(node, "request", "show", "twelve", code=2).stderr
    assert audit(node, "request.approved") == []  # a refusal changes and audits nothing
    assert len(as_json(node, "request", "list", "--pending")) == 2


def test_two_of_n_needs_two_distinct_approvers(node: Path) -> None:
    bastion(node, "target", "set", "web2", "--approvals", "2")
    rid = ask(node, "alice", ["web2"])
    first = as_json(node, "request", "approve", str(rid), "--as", "bob")
    assert first["request"]["state"] == "pending" and first["approvals_missing"] == 1
    assert "bob" not in first["can_approve"] and "dave" in first["can_approve"]
    assert "bob already approved" in refused(node, "request", "approve", str(rid), "--as", "bob")
    assert as_json(node, "grant", "list") == []
    assert "approvals 1/2" in bastion(node, "request", "list", "--pending").stdout
    second = as_json(node, "request", "approve", str(rid), "--as", "dave")
    assert second["request"]["state"] == "approved" and second["approvals_missing"] == 0
    (grant,) = second["grants"]
    assert grant["request_id"] == rid and grant["approved_by"] == "bob,dave"
    rows = audit(node, "request.approved")
    assert [(r["actor"], r["details"]["final"]) for r in rows] == [("bob", False), ("dave", True)]


def test_an_approver_narrows_but_never_widens(node: Path) -> None:
    rid = ask(node, "alice", ["web1", "web2"], options=["scp", "sftp"])
    approve = ("request", "approve", str(rid), "--as", "bob")
    assert "never lengthen" in refused(node, *approve, "--for", "3h")
    assert "never add (web3)" in refused(node, *approve, "--targets", "web1,web3")
    assert "never add (agent)" in refused(node, *approve, "--allow", "scp,agent")
    assert "unknown grant option" in bastion(node, *approve, "--allow", "telnet", code=2).stderr
    assert "cannot read duration" in bastion(node, *approve, "--for", "soon", code=2).stderr
    out = as_json(node, *approve, "--for", "1h", "--targets", "web1", "--allow", "scp")
    (grant,) = out["grants"]
    assert grant["target_name"] == "web1" and grant["options"] == ["scp"]
    assert grant["not_after"] - grant["not_before"] == pytest.approx(3600)
    (approval,) = out["request"]["approvals"]
    assert (approval["duration"], approval["targets"], approval["options"]) == (
        3600, ["web1"], ["scp"],
    )  # fmt: skip
    other = ask(node, "alice", ["web1"], options=["scp"])
    (grant,) = as_json(node, "request", "approve", str(other), "--as", "bob", "--allow", "none")[
        "grants"
    ]
    assert grant["options"] == []


# --- per-target policy and groups ----------------------------------------------------------


def test_target_set_and_show(node: Path) -> None:
    out = bastion(node, "target", "set", "web1", "--approvals", "2", "--approvers", "bob",
                  "@oncall", "--max-request", "4h")  # fmt: skip
    assert "approvals=2 approvers=@oncall,bob max-request=4h00m" in out.stdout
    shown = as_json(node, "target", "show", "web1")
    assert (shown["approvals"], shown["approvers"], shown["max_request"]) == (
        2, ["@oncall", "bob"], 14400,
    )  # fmt: skip
    assert shown["request_policy"] == {
        "approvals": 2, "approvers": ["@oncall", "bob"], "max_request": 14400,
    }  # fmt: skip
    listed = {t["name"]: t for t in as_json(node, "target", "list")}
    assert listed["web2"]["request_policy"] == {
        "approvals": 1, "approvers": [], "max_request": 8 * 3600,
    }  # fmt: skip
    assert "approvers=@oncall,bob" in bastion(node, "target", "list").stdout
    text = bastion(node, "target", "show", "web2").stdout
    assert "any approver or admin" in text and "1 (default)" in text

    assert "no user named 'sre'" in refused(node, "target", "set", "web1", "--approvers", "sre")
    assert "no target named 'web9'" in refused(node, "target", "set", "web9", "--approvals", "2")
    assert "at least 1" in bastion(node, "target", "set", "web1", "--approvals", "0",
                                   code=2).stderr  # fmt: skip
    assert "say what to set" in bastion(node, "target", "set", "web1", code=2).stderr

    # The policy is what the workflow applies: carol (admin, not named) may not approve,
    # a request longer than the target's maximum is refused, dave (@oncall) may approve.
    rid = ask(node, "alice", ["web1"], duration=3600)
    assert "needs an approver from: @oncall, bob" in refused(
        node, "request", "approve", str(rid), "--as", "carol"
    )
    bastion(node, "request", "approve", str(rid), "--as", "dave")
    assert state(node, rid) == "pending"
    bastion(node, "target", "set", "web1", "--any-approver")
    assert as_json(node, "target", "show", "web1")["approvers"] == []
    bastion(node, "request", "approve", str(rid), "--as", "carol")
    assert state(node, rid) == "approved"

    rows = audit(node, "target.set-policy")
    assert rows[0]["subject"] == "web1" and rows[0]["details"]["approvals"] == 2
    assert rows[0]["details"]["approvers"] == ["@oncall", "bob"]
    assert_cli_origin(rows[0])
    assert len(rows) == 2  # refused changes are not audited


def test_user_groups(node: Path) -> None:
    users = {u["name"]: u for u in as_json(node, "user", "list")}
    assert users["bob"]["role"] == "approver" and users["bob"]["groups"] == ["sre"]
    assert users["dave"]["groups"] == ["oncall", "sre"] and users["alice"]["groups"] == []
    assert "groups=oncall,sre" in bastion(node, "user", "list").stdout

    assert "groups oncall" in bastion(node, "user", "set", "bob", "--group", "oncall").stdout
    assert "groups dba, oncall" in bastion(node, "user", "set", "bob", "--add-group", "@dba").stdout
    bastion(node, "user", "set", "dave", "--remove-group", "sre")
    bastion(node, "user", "set", "carol", "--group", "a,b", "--group", "c")
    users = {u["name"]: u for u in as_json(node, "user", "list")}
    assert users["bob"]["groups"] == ["dba", "oncall"] and users["dave"]["groups"] == ["oncall"]
    assert users["carol"]["groups"] == ["a", "b", "c"]
    bastion(node, "user", "set", "carol", "--no-groups")
    assert {u["name"]: u for u in as_json(node, "user", "list")}["carol"]["groups"] == []

    assert "no user named 'ghost'" in refused(node, "user", "set", "ghost", "--group", "x")
    assert (
        "not a valid group name"
        in bastion(node, "user", "set", "bob", "--group", "bad group", code=2).stderr
    )
    assert "say what to change" in bastion(node, "user", "set", "bob", code=2).stderr

    rows = audit(node, "user.set-groups")
    assert [r["subject"] for r in rows] == ["bob", "bob", "dave", "carol", "carol"]
    assert rows[0]["details"]["before"] == ["sre"] and rows[0]["details"]["groups"] == ["oncall"]
    assert_cli_origin(rows[0])
    added = {r["subject"]: r for r in audit(node, "user.add")}
    assert added["dave"]["details"]["groups"] == ["oncall", "sre"]

    # Groups decide: only @sre may approve web2 now, and bob left sre.
    bastion(node, "target", "set", "web2", "--approvers", "@sre")
    bastion(node, "user", "set", "alice", "--group", "sre")  # a requester in the group
    rid = ask(node, "alice", ["web2"])
    assert "needs an approver from: @sre" in refused(
        node, "request", "approve", str(rid), "--as", "bob"
    )
    bastion(node, "user", "set", "bob", "--add-group", "sre")
    bastion(node, "request", "approve", str(rid), "--as", "bob")
    assert state(node, rid) == "approved"


# --- notifications ---------------------------------------------------------------------------


def _webhook(node: Path, url: str) -> None:
    """Make ``url`` the node's only webhook (for ``request.*`` events)."""
    config = node / "bastion.toml"
    text = config.read_text().split("\n[[notify.webhook]]\n")[0]
    config.write_text(f'{text}\n[[notify.webhook]]\nurl = "{url}"\nevents = ["request.*"]\n')


def test_approve_delivers_the_webhook_before_the_command_exits(node: Path) -> None:
    rid = ask(node, "alice", ["web1"])
    with http_receiver(script=[503]) as receiver:  # the first attempt fails: retried
        _webhook(node, receiver.url)
        bastion(node, "request", "approve", str(rid), "--as", "bob", "--reason", "go")
        accepted = receiver.accepted()  # read at once: the CLI has exited
        assert len(receiver.all()) == 2
    (hit,) = accepted
    body = json.loads(hit.body)
    assert (body["event"], body["request_id"], body["requester"]) == (
        "request.approved", rid, "alice",
    )  # fmt: skip
    assert (body["decision"], body["decided_by"], body["targets"]) == ("approved", "bob", ["web1"])
    assert audit(node, "notify.") == []

    denied = ask(node, "alice", ["web2"])
    with http_receiver() as receiver:
        _webhook(node, receiver.url)
        bastion(node, "request", "deny", str(denied), "--as", "dave", "--reason", "no")
        events = [json.loads(r.body)["event"] for r in receiver.accepted()]
    assert events == ["request.denied"]


def test_an_undeliverable_notification_is_audited_and_named(node: Path) -> None:
    """A receiver that is down: the decision stands, the CLI says so, the audit says so."""
    rid = ask(node, "alice", ["web1"])
    _webhook(node, f"http://127.0.0.1:{closed_port()}/hook")
    r = bastion(node, "request", "approve", str(rid), "--as", "bob")
    assert f"request #{rid} approved by bob" in r.stdout
    assert "notification request.approved to" in r.stderr and "not delivered" in r.stderr
    assert state(node, rid) == "approved"
    (row,) = audit(node, "notify.failed")
    assert row["details"]["event"] == "request.approved"
    assert_cli_origin(row)
