"""Nothing is deleted from history: ``--all`` listings show removed targets, ended grants
and disabled users, and sessions and audit rows keep naming them (real SQLite store)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bastion.store.models import SessionRecord
from tests.bastion.test_cli import _open_store, _pubkey, node_dir, run

__all__ = ["node_dir"]


def test_removed_targets_and_ended_grants_stay_visible(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def ok(*args: str) -> str:
        code, out, err = run(node_dir, capsys, *args)
        assert code == 0, err
        return out

    ok("user", "add", "dave", "--key", str(_pubkey(tmp_path, "d")))
    host = str(_pubkey(tmp_path, "host"))
    for name in ("web1", "web2"):
        ok("target", "add", name, "--ssh", "10.0.0.5:22", "--login", "deploy", "--host-key", host)
    ok("grant", "add", "dave", "web1", "--for", "2h", "--reason", "CHG-1")
    ok("grant", "add", "dave", "web2", "--for", "2h", "--reason", "CHG-2")
    ok("grant", "revoke", "2")
    sid = "01SESSIONHISTORYAAAAAAAAAA"
    with _open_store(node_dir) as store:
        user, target = store.get_user("dave"), store.get_target("web1")
        assert user is not None and target is not None
        store.start_session(
            SessionRecord(
                id=sid,
                user_id=user.id,
                user_name="dave",
                target_id=target.id,
                target_name="web1",
                grant_id=1,
                node="n1",
                protocol="ssh",
                login="deploy",
                client_addr="192.0.2.7:5555",
                started_at=time.time(),
            )  # fmt: skip
        )
    ok("target", "remove", "web1")
    ok("user", "disable", "dave")

    assert [line.split()[0] for line in ok("target", "list").splitlines()] == ["web2"]
    listed = ok("target", "list", "--all").splitlines()
    assert [line.split()[0] for line in listed] == ["web1", "web2"]
    assert "(removed " in listed[0] and "(removed" not in listed[1]
    as_json = {t["name"]: t for t in json.loads(ok("target", "list", "--all", "--json"))}
    assert as_json["web1"]["removed_at"] is not None and as_json["web2"]["removed_at"] is None

    def grant_states(*args: str) -> dict[int, str]:
        rows = json.loads(ok("grant", "list", "--json", *args))
        return {int(g["id"]): str(g["state"]) for g in rows}

    everything = {1: "revoked", 2: "revoked"}  # web1's by its removal, web2's by hand
    assert grant_states() == grant_states("--all") == everything
    assert grant_states("--target", "web1") == {1: "revoked"}  # a removed target still answers
    assert grant_states("--active") == {}
    assert "#1" in ok("grant", "list", "--all", "--target", "web1")
    with pytest.raises(SystemExit):
        run(node_dir, capsys, "grant", "list", "--all", "--active")
    assert "not allowed with" in capsys.readouterr().err
    code, _, err = run(node_dir, capsys, "grant", "list", "--target", "nosuch")
    assert code == 1 and "no target named 'nosuch'" in err

    users = json.loads(ok("user", "list", "--all", "--json"))
    assert [(u["name"], u["state"]) for u in users] == [("dave", "disabled")]
    assert ok("user", "list") == ok("user", "list", "--all")

    (session,) = json.loads(ok("sessions", "list", "--json", "--target", "web1"))
    assert (session["id"], session["target_name"], session["grant_id"]) == (sid, "web1", 1)
    audit = json.loads(ok("audit", "--json"))
    assert {("target.add", "web1"), ("target.remove", "web1"), ("grant.add", "grant #1"),
            ("grant.revoke", "grant #2"), ("user.disable", "dave")} <= {
        (r["action"], r["subject"]) for r in audit
    }  # fmt: skip
    (added,) = [r for r in audit if r["subject"] == "grant #1"]
    assert added["details"]["target"] == "web1"
    ok("audit", "--verify")  # the chain is intact: nothing was deleted or rewritten
