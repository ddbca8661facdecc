"""The admin CLI end to end on a fresh directory (in-process ``main``, real SQLite)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bastion.cli import build_parser, main


@pytest.fixture()
def node_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["init", "--dir", str(tmp_path), "--listen", "127.0.0.1:2299"]) == 0
    out = capsys.readouterr().out
    assert out.count("ssh-ed25519 ") == 1  # the CA line targets must trust
    open_ended(tmp_path)
    return tmp_path


def open_ended(node_dir: Path) -> None:
    """Let contractors be added without an end date (engagements have their own tests)."""
    config = node_dir / "bastion.toml"
    text = config.read_text()
    assert "require_end_date = true" in text
    config.write_text(text.replace("require_end_date = true", "require_end_date = false"))


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


def test_expected_errors_are_one_line(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Usage (2), store, config, access and control errors (1): one line, no traceback."""
    cases: list[tuple[list[str], int, str]] = [
        (["grant", "add", "a", "web1", "--for", "1h", "--allow", "telnet"], 2, "unknown grant"),
        (["grant", "add", "a", "web1", "--until", "yesterday"], 2, "cannot read time"),
        (["audit", "--since", "a while"], 2, "cannot read time"),
        (["user", "add", "bad name", "--key", "k"], 2, "not a valid user name"),
        (["sessions", "list", "--limit", "0"], 2, "--limit must be at least 1"),
        (["grant", "revoke", "99"], 1, "99"),
        (["user", "lock", "ghost"], 1, "no user named 'ghost'"),
        (["control", "sessions", "--as", "root"], 1, "cannot connect to the control socket"),
        (["user", "control-token", "ghost"], 1, "no user named 'ghost'"),
    ]
    for args, want_code, want in cases:
        code, out, err = run(node_dir, capsys, *args)
        assert (code, out) == (want_code, ""), args
        assert err.startswith("bastion: ") and err.count("\n") == 1, (args, err)
        assert want in err, (args, err)
    (node_dir / "bastion.toml").write_text("[ssh]\nidle_timout = 0\n")
    code, _, err = run(node_dir, capsys, "user", "list")
    assert code == 1 and err.count("\n") == 1 and "did you mean 'idle_timeout'" in err


@pytest.mark.parametrize("bug", [ValueError("bad int"), KeyError("x"), TypeError("None")])
def test_a_bug_keeps_its_traceback(
    node_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bug: Exception,
) -> None:
    """An error the CLI does not expect is not turned into a tidy line: it propagates."""
    from bastion import cli_admin

    def broken(args: object) -> int:
        raise bug

    monkeypatch.setattr(cli_admin, "cmd_audit", broken)
    with pytest.raises(type(bug)):
        run(node_dir, capsys, "audit")


def test_totp_code_is_audited_before_it_is_printed(
    node_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever prints a user's code can pass her second factor: the row names them."""
    import getpass
    import os
    import re

    from bastion.mfa import code_for_step

    code, out, _ = run(
        node_dir, capsys, "user", "add", "alice", "--key", str(_pubkey(tmp_path, "a"))
    )
    secret = re.search(r"secret=([A-Z2-7]+)", out)
    assert code == 0 and secret is not None
    monkeypatch.setenv("BASTION_ACTOR", "ops-script")  # overrides the actor, not the uid
    code, out, _ = run(node_dir, capsys, "totp-code", "alice")
    assert code == 0
    rows = json.loads(run(node_dir, capsys, "audit", "--json", "--action", "user.totp-code")[1])
    assert len(rows) == 1
    row = rows[0]
    assert (row["actor"], row["subject"]) == ("ops-script", "alice")
    details = row["details"]
    assert details["via"] == "cli"
    assert (details["uid"], details["login"]) == (os.getuid(), getpass.getuser())
    assert out.strip() == code_for_step(secret.group(1), details["step"])
    code, _, err = run(node_dir, capsys, "totp-code", "ghost")
    assert code == 1 and "no user named 'ghost'" in err
    rows = json.loads(run(node_dir, capsys, "audit", "--json", "--action", "user.totp-code")[1])
    assert len(rows) == 1  # a refused request printed nothing and audits nothing


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


def test_terminate_and_unlock_audit_with_the_local_account(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI goes through bastion.admin_actions: the rows say via=cli, uid and login."""
    import getpass
    import os

    from bastion.store.models import SessionRecord

    run(node_dir, capsys, "user", "add", "dave", "--key", str(_pubkey(tmp_path, "d")))
    run(node_dir, capsys, "target", "add", "web1", "--ssh", "10.0.0.5:22", "--login", "deploy",
        "--host-key", str(_pubkey(tmp_path, "host")))  # fmt: skip
    sid = "01SESSIONAAAAAAAAAAAAAAAAA"
    with _open_store(node_dir) as store:
        user, target = store.get_user("dave"), store.get_target("web1")
        store.start_session(
            SessionRecord(
                id=sid,
                user_id=user.id,
                user_name="dave",
                target_id=target.id,
                target_name="web1",
                grant_id=None,
                node="n1",
                protocol="ssh",
                login="deploy",
                client_addr="192.0.2.7:5555",
                started_at=time.time(),
            )  # fmt: skip
        )
    code, out, err = run(node_dir, capsys, "sessions", "terminate", sid, "--reason", "incident")
    assert code == 0 and "termination requested" in out, err
    code, _, err = run(node_dir, capsys, "sessions", "terminate", "01NOSUCHAAAAAAAAAAAAAAAAAA",
                       "--reason", "x")  # fmt: skip
    assert code == 1 and "no session" in err
    assert run(node_dir, capsys, "user", "unlock", "dave")[0] == 0
    rows = json.loads(run(node_dir, capsys, "audit", "--json")[1])
    by_action = {r["action"]: r for r in rows}
    assert "session.terminate-requested" in by_action and "user.unlock" in by_action
    for action in ("session.terminate-requested", "user.unlock"):
        details = by_action[action]["details"]
        assert details["via"] == "cli" and details["uid"] == os.getuid()
        assert details["login"] == getpass.getuser()
    assert by_action["session.terminate-requested"]["subject"] == sid
    assert by_action["session.terminate-requested"]["details"]["reason"] == "incident"
    assert len([r for r in rows if r["action"].startswith("session.")]) == 1


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command and subcommand answers --help (in process; the entry point once for real)."""
    r = subprocess.run(
        [sys.executable, "-m", "bastion", "--help"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0 and "usage: bastion" in r.stdout, r.stderr
    parser = build_parser()
    seen = 0
    stack: list[tuple[list[str], argparse.ArgumentParser]] = [([], parser)]
    while stack:
        prefix, p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    stack.append(([*prefix, name], sub))
        with pytest.raises(SystemExit) as done:
            main([*prefix, "--help"])
        out = capsys.readouterr()
        assert done.value.code == 0, (prefix, out.err)
        assert "usage: bastion" in out.out, prefix
        seen += 1
    assert seen > 15


# --- PostgreSQL targets, database grants and tokens -------------------------------------


def _open_store(node_dir: Path) -> Any:
    from bastion.config import load_config
    from bastion.secretbox import SecretBox
    from bastion.store import open_store

    config = load_config(node_dir / "bastion.toml")
    return open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))


def test_postgres_target_grant_and_tokens(
    node_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bastion.db_tokens import TokenRefused, check_db_token, issue_db_token

    run(node_dir, capsys, "user", "add", "alice", "--key", str(_pubkey(tmp_path, "alice")))
    pw_file = tmp_path / "rw.pw"
    pw_file.write_text("rw-secret-1\n")
    monkeypatch.setenv("RO_PW", "ro-secret-2")
    monkeypatch.setenv("BASTION_ACTOR", "test-admin")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    code, out, err = run(
        node_dir, capsys, "target", "add", "pg1", "--postgres", "db.internal:5433",
        "--database", "app", "--credset", f"readwrite:app_rw:file:{pw_file}",
        "--credset", "readonly:app_ro:env:RO_PW", "--credset", "trusted:app_t",
        "--tls", "verify-full", "--ca-file", str(ca),
    )  # fmt: skip
    assert code == 0, err
    assert "added PostgreSQL target pg1 (db.internal:5433, database app)" in out
    assert "secret" not in out

    code, out, _ = run(node_dir, capsys, "target", "list")
    assert "pg1" in out and "postgres" in out and "database=app" in out
    assert "credsets=readwrite,readonly,trusted" in out and "tls=verify-full" in out
    code, out, _ = run(node_dir, capsys, "target", "list", "--json")
    (listed,) = json.loads(out)
    assert listed["kind"] == "postgres" and listed["tls_ca"] == str(ca.resolve())
    assert [c["name"] for c in listed["credsets"]] == ["readwrite", "readonly", "trusted"]
    assert "secret" not in out and "password" not in out
    with _open_store(node_dir) as store:
        target = store.get_target("pg1")
        assert [(c.user, c.password) for c in target.credsets] == [
            ("app_rw", "rw-secret-1"), ("app_ro", "ro-secret-2"), ("app_t", None),
        ]  # fmt: skip

    code, _, err = run(node_dir, capsys, "grant", "add", "alice", "pg1", "--for", "2h")
    assert code == 2 and "several credential sets (readwrite, readonly, trusted)" in err
    code, _, err = run(
        node_dir, capsys, "grant", "add", "alice", "pg1", "--credset", "admin", "--for", "2h"
    )
    assert code == 2 and "no credential set 'admin'" in err
    code, _, err = run(
        node_dir, capsys, "grant", "add", "alice", "pg1", "--login", "root", "--for", "2h"
    )
    assert code == 2 and "--login is for SSH targets" in err
    code, out, err = run(
        node_dir, capsys, "grant", "add", "alice", "pg1", "--credset", "readonly",
        "--for", "2h", "--json",
    )  # fmt: skip
    assert code == 0, err
    grant = json.loads(out)
    assert grant["credset"] == "readonly" and grant["login"] is None
    code, out, _ = run(node_dir, capsys, "grant", "list")
    assert f"#{grant['id']}" in out and "readonly" in out

    with _open_store(node_dir) as store:
        user, target = store.get_user("alice"), store.get_target("pg1")
        g = store.get_grant(grant["id"])
        issued = [
            issue_db_token(
                store, user=user, target=target, grant=g, credset="readonly",
                now=time.time(), ttl=3600, created_from="192.0.2.7",
            )
            for _ in range(3)
        ]  # fmt: skip
    code, out, _ = run(node_dir, capsys, "token", "list", "--user", "alice")
    lines = out.splitlines()
    assert len(lines) == 3 and all("pg1/readonly" in x and "live" in x for x in lines)
    assert all("192.0.2.7" in x and "used never" in x for x in lines)
    code, out, _ = run(node_dir, capsys, "token", "list", "--json")
    assert [t["id"] for t in json.loads(out)] == [i.record.id for i in issued]
    assert "token_hash" not in out and all(i.token not in out for i in issued)

    first = issued[0].record.id
    code, out, err = run(node_dir, capsys, "token", "revoke", f"#{first}")
    assert code == 0 and f"revoked token #{first} of alice" in out, err
    code, _, err = run(node_dir, capsys, "token", "revoke", str(first))
    assert code == 1 and "already revoked by test-admin" in err
    code, _, err = run(node_dir, capsys, "token", "revoke", "9999")
    assert code == 1 and "no token #9999" in err
    code, out, _ = run(node_dir, capsys, "token", "list", "--all")
    assert "revoked by test-admin" in out
    assert len(run(node_dir, capsys, "token", "list")[1].splitlines()) == 2

    code, out, _ = run(node_dir, capsys, "user", "lock", "alice", "--for", "1h")
    assert code == 0 and "2 token(s) revoked" in out
    assert run(node_dir, capsys, "token", "list")[1] == ""
    with _open_store(node_dir) as store, pytest.raises(TokenRefused, match="revoked"):
        check_db_token(
            store, user_name="alice", target_name="pg1", token=issued[1].token, now=time.time()
        )

    code, out, _ = run(node_dir, capsys, "audit", "--json")
    rows = json.loads(out)
    by_action = {r["action"]: r for r in rows}
    assert by_action["target.add"]["details"]["credsets"] == ["readwrite", "readonly", "trusted"]
    assert by_action["grant.add"]["details"]["credset"] == "readonly"
    assert by_action["db-token.revoke"]["subject"] == f"token #{first}"
    assert by_action["user.lock"]["details"]["tokens_revoked"] == 2
    assert "secret" not in out


def test_postgres_target_add_errors(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["target", "add", "pg9", "--postgres", "h:5432"]
    code, _, err = run(node_dir, capsys, *base, "--credset", "ro:u")
    assert code == 2 and "needs --database DB" in err
    code, _, err = run(node_dir, capsys, *base, "--database", "d")
    assert code == 2 and "at least one --credset" in err
    code, _, err = run(node_dir, capsys, *base, "--database", "d", "--credset", "ro")
    assert code == 2 and "NAME:USER:file:/path/to/password" in err
    code, _, err = run(node_dir, capsys, *base, "--database", "d", "--credset", "ro:u:vault:x")
    assert code == 2 and "must be file:PATH or env:VARIABLE" in err
    # a literal password typed where a source belongs is refused without being echoed
    for literal in ("ro:u:Hunter2-literal", "bad!:u:Hunter2-literal"):
        code, out, err = run(node_dir, capsys, *base, "--database", "d", "--credset", literal)
        assert code == 2 and "Hunter2" not in out + err, err
        assert f"--credset '{literal.split(':')[0]}:u:...'" in err
    code, _, err = run(
        node_dir, capsys, *base, "--database", "d", "--credset", "ro:u:env:BASTION_NO_SUCH_VAR"
    )
    assert code == 1 and "BASTION_NO_SUCH_VAR is not set" in err
    missing = tmp_path / "missing.pw"
    code, _, err = run(
        node_dir, capsys, *base, "--database", "d", "--credset", f"ro:u:file:{missing}"
    )
    assert code == 1 and f"cannot read the password of credential set ro from {missing}" in err
    code, _, err = run(
        node_dir, capsys, *base, "--database", "d", "--credset", "ro:u", "--ca-file", "x.pem"
    )
    assert code == 2 and "--ca-file is only used with --tls verify-full" in err
    code, _, err = run(
        node_dir, capsys, *base, "--database", "d", "--credset", "ro:u", "--login", "root"
    )
    assert code == 2 and "are for --ssh targets" in err
    with pytest.raises(SystemExit) as exited:  # argparse: --ssh and --postgres exclude each other
        run(node_dir, capsys, *base, "--ssh", "h:22", "--login", "x")
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    code, _, err = run(
        node_dir, capsys, "target", "add", "web9", "--ssh", "h:22", "--login", "x",
        "--database", "d",
    )  # fmt: skip
    assert code == 2 and "are for --postgres targets" in err
    code, _, err = run(node_dir, capsys, *base, "--database", "d", "--credset", "ro:u")
    assert code == 0, err
    code, _, err = run(node_dir, capsys, "target", "setup", "pg9")
    assert code == 1 and "pg9 is a PostgreSQL target" in err
    run(node_dir, capsys, "user", "add", "bob", "--key", str(_pubkey(tmp_path, "bob")))
    code, out, err = run(node_dir, capsys, "grant", "add", "bob", "pg9", "--for", "1h")
    assert code == 0 and "with credential set ro" in out, err  # the only set needs no --credset
    code, _, err = run(
        node_dir, capsys, "grant", "add", "bob", "pg9", "--for", "1h", "--allow", "scp"
    )
    assert code == 2 and "--allow options are for SSH targets" in err
    code, out, _ = run(node_dir, capsys, "audit", "--json")
    assert [r["action"] for r in json.loads(out)].count("target.add") == 1
