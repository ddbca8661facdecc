"""``bastion target label``, ``bastion profile ...``, ``grant add --profile`` (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bastion.test_cli import _pubkey, node_dir, run

__all__ = ["node_dir"]


def test_labels_profiles_and_profile_grants(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(node_dir, capsys, "user", "add", "alice", "--key", str(_pubkey(tmp_path, "a")))[0] == 0
    )
    host = str(_pubkey(tmp_path, "host"))
    for name, labels in [("web1", ["env=staging", "role=web"]), ("web2", ["env=prod"])]:
        args = ["target", "add", name, "--ssh", "10.1.2.3:22", "--login", "deploy"]
        code, out, err = run(node_dir, capsys, *args, "--host-key", host,
                             *[x for lab in labels for x in ("--label", lab)])  # fmt: skip
        assert code == 0, err
    assert out.startswith("added target web2") and "labels env=prod" in out
    code, out, _ = run(node_dir, capsys, "target", "show", "web1")
    assert "labels          env=staging,role=web" in out

    code, out, err = run(
        node_dir, capsys, "profile", "add", "staging", "--select", "env=staging",
        "--login", "deploy", "--allow", "sftp", "--max", "4h",
    )  # fmt: skip
    assert code == 0, err
    assert "reaches now: web1" in out
    code, out, err = run(node_dir, capsys, "grant", "add", "alice", "--profile", "staging",
                         "--for", "5h")  # fmt: skip
    assert code == 2 and "at most 4h" in err, err
    code, out, err = run(node_dir, capsys, "grant", "add", "alice", "--profile", "staging",
                         "--for", "2h", "--json")  # fmt: skip
    assert code == 0, err
    grant = json.loads(out)
    assert grant["profile_name"] == "staging" and grant["target_id"] is None
    assert grant["options"] == ["sftp"] and grant["reaches"] == ["web1"]

    code, out, err = run(node_dir, capsys, "target", "label", "web2", "env=staging")
    assert code == 0, err
    code, out, _ = run(node_dir, capsys, "profile", "list", "--json")
    assert json.loads(out)[0]["reaches"] == ["web1", "web2"]
    code, out, err = run(node_dir, capsys, "target", "label", "web1", "--remove", "env")
    assert code == 0, err
    assert "labels role=web" in out
    code, out, _ = run(node_dir, capsys, "profile", "show", "staging")
    assert "reaches now     web2" in out
    code, _, err = run(node_dir, capsys, "target", "label", "web1", "--remove", "env")
    assert code == 1 and "has no label 'env'" in err

    code, out, _ = run(node_dir, capsys, "grant", "list")
    assert "profile:staging" in out
    assert run(node_dir, capsys, "profile", "remove", "staging")[0] == 0
    code, out, _ = run(node_dir, capsys, "profile", "list")
    assert out == ""
    code, out, _ = run(node_dir, capsys, "profile", "list", "--all")
    assert "staging" in out and "removed" in out

    code, out, _ = run(node_dir, capsys, "audit", "--json")
    actions = [e["action"] for e in json.loads(out)]
    for action in ("target.label", "profile.add", "profile.remove", "grant.add"):
        assert action in actions
