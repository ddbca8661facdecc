"""``bastion policy`` end to end on a fresh directory (in-process ``main``, real SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.cli import main
from tests.bastion.test_cli import _pubkey


@pytest.fixture()
def node_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--dir", str(tmp_path), "--listen", "127.0.0.1:2299"]) == 0
    capsys.readouterr()
    return tmp_path


def run(node_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--config", str(node_dir / "bastion.toml")])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_add_list_test_remove(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def ok(*args: str) -> str:
        code, out, err = run(node_dir, capsys, "policy", *args)
        assert code == 0, err
        return out

    ok("add", "no-rm", "--command", "rm", "--args=-[a-z]*r", "--action", "deny")
    ok("add", "no-drop", "--sql", "drop,truncate", "--tables", "public.*", "--action", "terminate")
    ok("add", "tmp-ok", "--command", "rm", "--args", "/tmp/", "--action", "allow",
       "--before", "no-rm", "--user", "@ops", "--target", "web*")  # fmt: skip
    ok("add", "watch-dd", "--command", "dd", "--action", "deny", "--shadow")
    out = ok("list")
    assert [line.split()[1] for line in out.splitlines()[:4]] == [
        "tmp-ok", "no-rm", "no-drop", "watch-dd",
    ]  # fmt: skip
    assert "default: allow" in out
    listed = json.loads(ok("list", "--json"))
    assert listed["rules"][0]["users"] == ["@ops"] and listed["rules"][3]["shadow"] is True

    out = ok("test", "--user", "alice", "--target", "web1", "--command", "ls && sudo \\rm -rf /srv")
    assert out.splitlines()[:2] == ["deny: rule 'no-rm' (deny): rm -rf /srv", "rule: no-rm"]
    out = ok("test", "--user", "alice", "--target", "web1", "--command", "echo rm -rf /srv")
    assert out.startswith("allow") and "rule: (default)" in out
    d = json.loads(ok("test", "--json", "--user", "bob", "--target", "db1",
                      "--sql", "select 1; DROP TABLE public.t"))  # fmt: skip
    assert (d["action"], d["rule"]) == ("terminate", "no-drop")
    d = json.loads(ok("test", "--json", "--user", "bob", "--target", "web1",
                      "--command", "dd if=/dev/zero of=/dev/sda"))  # fmt: skip
    assert (d["action"], d["shadow"]) == ("allow", ["watch-dd"])
    d = json.loads(ok("test", "--json", "--user", "bob", "--target", "web1",
                      "--command", "C=rm; $C -rf /srv"))  # fmt: skip
    assert d["action"] == "deny" and d["rule"] is None and d["unanalysable"]

    ok("remove", "no-rm")
    out = ok("test", "--user", "alice", "--target", "web1", "--command", "rm -rf /srv")
    assert out.startswith("allow")
    code, out, _ = run(node_dir, capsys, "audit", "--json")
    acts = [r["action"] for r in json.loads(out)]
    assert acts.count("policy.rule-add") == 4 and acts.count("policy.rule-remove") == 1


def test_bad_rules_are_usage_errors(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(node_dir, capsys, "policy", "add", "x", "--action", "deny")
    assert code == 2 and "one of --command, --sql or --file" in err
    code, _, err = run(node_dir, capsys, "policy", "add", "x", "--sql", "dorp", "--action", "deny")
    assert code == 2 and "unknown SQL classes dorp" in err
    code, _, err = run(node_dir, capsys, "policy", "add", "x", "--command", "rm", "--args", "(",
                       "--action", "deny")  # fmt: skip
    assert code == 2 and "--args is not a regex" in err
    code, _, err = run(node_dir, capsys, "policy", "remove", "x")
    assert code == 1 and "no policy rule named 'x'" in err
    code, out, _ = run(node_dir, capsys, "policy", "list", "--json")
    assert json.loads(out)["rules"] == []


def test_label_rules_match_the_named_targets_stored_labels(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def ok(*args: str) -> str:
        code, out, err = run(node_dir, capsys, *args)
        assert code == 0, err
        return out

    host = str(_pubkey(tmp_path, "host"))
    for name, env in (("db1", "prod"), ("db2", "dev")):
        ok("target", "add", name, "--ssh", "10.1.2.3:22", "--login", "deploy",
           "--host-key", host, "--label", f"env={env}")  # fmt: skip
    ok("policy", "add", "no-rm-prod", "--command", "rm", "--target", "env=prod", "--action", "deny")

    def action(target: str) -> str:
        out = ok("policy", "test", "--json", "--user", "alice", "--target", target,
                 "--command", "rm -rf /srv")  # fmt: skip
        return str(json.loads(out)["action"])

    assert [action(t) for t in ("db1", "db2", "nosuch")] == ["deny", "allow", "allow"]
    ok("target", "label", "db1", "env=dev")
    ok("target", "label", "db2", "env=prod")
    assert [action(t) for t in ("db1", "db2")] == ["allow", "deny"]
    ok("target", "remove", "db2")  # a removed target has no labels to match
    assert action("db2") == "allow"
