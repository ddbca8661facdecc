"""The admin CLI end to end on a fresh directory (in-process ``main``, real SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from bastion.cli import build_parser, main


@pytest.fixture()
def node_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--dir", str(tmp_path), "--listen", "127.0.0.1:2299"]) == 0
    out = capsys.readouterr().out
    assert out.count("ssh-ed25519 ") == 1  # the CA line targets must trust
    return tmp_path


def run(node_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--config", str(node_dir / "bastion.toml")])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _pubkey(tmp_path: Path, name: str) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
    path = tmp_path / f"{name}.pub"
    path.write_bytes(key.export_public_key("openssh"))
    return path


def test_init_writes_private_files_and_is_idempotent(
    node_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("bastion.toml", "keys/secret.key", "keys/user_ca", "keys/ssh_host_ed25519_key"):
        assert (node_dir / name).stat().st_mode & 0o077 == 0, name
    ca_before = (node_dir / "keys/user_ca.pub").read_text()
    assert main(["init", "--dir", str(node_dir)]) == 0
    assert "kept existing" in capsys.readouterr().out
    assert (node_dir / "keys/user_ca.pub").read_text() == ca_before


def test_user_target_grant_audit_flow(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = _pubkey(tmp_path, "alice")
    code, out, _ = run(node_dir, capsys, "user", "add", "alice", "--key", str(key))
    assert code == 0
    assert "otpauth://totp/bastion:alice?secret=" in out
    assert "█" in out  # the QR code
    code, out, _ = run(node_dir, capsys, "user", "list", "--json")
    users = json.loads(out)
    assert users[0]["name"] == "alice" and users[0]["role"] == "contractor"
    assert "totp_secret" not in users[0]

    host_key = _pubkey(tmp_path, "web1host")
    code, out, err = run(
        node_dir,
        capsys,
        "target",
        "add",
        "web1",
        "--ssh",
        "10.1.2.3:2201",
        "--login",
        "deploy",
        "--host-key",
        str(host_key),
    )
    assert code == 0, err
    code, out, _ = run(node_dir, capsys, "target", "setup", "web1")
    assert "TrustedUserCAKeys /etc/ssh/bastion_user_ca.pub" in out
    assert "AuthorizedPrincipalsFile /etc/ssh/auth_principals/%u" in out
    assert "echo 'bastion-web1' > /etc/ssh/auth_principals/deploy" in out
    assert (node_dir / "keys/user_ca.pub").read_text().strip() in out

    code, out, err = run(
        node_dir,
        capsys,
        "grant",
        "add",
        "alice",
        "web1",
        "--for",
        "2h",
        "--reason",
        "CHG-1",
        "--allow",
        "scp,sftp",
        "--json",
    )
    assert code == 0, err
    grant = json.loads(out)
    assert grant["login"] == "deploy" and grant["options"] == ["scp", "sftp"]
    assert 7199 <= grant["not_after"] - grant["not_before"] <= 7201
    code, out, _ = run(node_dir, capsys, "grant", "list", "--active", "--json")
    assert [g["id"] for g in json.loads(out)] == [grant["id"]]
    code, out, _ = run(node_dir, capsys, "grant", "revoke", f"#{grant['id']}")
    assert code == 0
    code, out, _ = run(node_dir, capsys, "grant", "list", "--active", "--json")
    assert json.loads(out) == []

    code, out, err = run(node_dir, capsys, "audit", "--json", "--verify")
    assert code == 0
    actions = [e["action"] for e in json.loads(out)]
    assert actions == ["user.add", "target.add", "grant.add", "grant.revoke"]
    assert "audit chain intact" in err


def test_errors_are_clear_and_nonzero(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(node_dir, capsys, "grant", "add", "ghost", "web1", "--for", "1h")
    assert code == 1 and "no user named 'ghost'" in err
    code, _, err = run(node_dir, capsys, "grant", "add", "ghost", "web1", "--for", "soon")
    assert code == 2 and "cannot read duration" in err
    code, _, err = run(node_dir, capsys, "user", "add", "bob", "--key", str(tmp_path / "nope"))
    assert code == 1 and "cannot read public key file" in err
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    code, _, err = run(node_dir, capsys, "user", "add", "bob", "--key", str(bad))
    assert code == 1 and "not an OpenSSH public key" in err
    code, _, err = run(node_dir, capsys, "target", "add", "web9", "--ssh", "h:22", "--login", "x")
    assert code == 2 and "pin the target's host key" in err
    code, _, err = main(["user", "list", "--config", str(tmp_path / "missing.toml")]), "", ""
    assert code == 1
    assert "bastion init" in capsys.readouterr().err


def test_user_lifecycle_commands(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(node_dir, capsys, "user", "add", "carol", "--key", str(_pubkey(tmp_path, "c1")))
    assert run(node_dir, capsys, "user", "disable", "carol")[0] == 0
    assert "disabled" in run(node_dir, capsys, "user", "list")[1]
    assert run(node_dir, capsys, "user", "enable", "carol")[0] == 0
    code, out, _ = run(node_dir, capsys, "user", "reset-mfa", "carol")
    assert code == 0 and "otpauth://" in out
    assert (
        run(node_dir, capsys, "user", "add-key", "carol", "--key", str(_pubkey(tmp_path, "c2")))[0]
        == 0
    )
    users = json.loads(run(node_dir, capsys, "user", "list", "--json")[1])
    assert len(users[0]["ssh_keys"]) == 2


def test_every_command_has_help() -> None:
    parser = build_parser()
    seen = 0
    stack = [([], parser)]
    while stack:
        prefix, p = stack.pop()
        for action in p._actions:
            if isinstance(action, type(parser._subparsers._group_actions[0])):  # type: ignore[union-attr]
                for name, sub in action.choices.items():
                    stack.append(([*prefix, name], sub))
        r = subprocess.run(
            [sys.executable, "-m", "bastion", *prefix, "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, (prefix, r.stderr)
        assert "usage: bastion" in r.stdout
        seen += 1
    assert seen > 15
