"""Login through the bastion with stock OpenSSH and paramiko: public key + TOTP, refusals."""

from __future__ import annotations

import time

import paramiko
import pytest

from bastion.store.models import Role
from tests.peers.bastion_node import LOGIN, BastionHarness

pytestmark = pytest.mark.integration


def test_exec_with_exit_status_through_openssh(bastion: BastionHarness) -> None:
    alice = bastion.contractor()
    bastion.grant(alice, "web1")
    r = alice.ssh("echo out-$((40+2)); echo err >&2; exit 7", target="web1")
    assert r.returncode == 7, r.stderr
    assert r.stdout == b"out-42\n"
    assert b"err" in r.stderr
    ok = bastion.audit(alice.name, "login.ok")
    assert ok and ok[-1].details["methods"] == "publickey,keyboard-interactive"
    starts = bastion.audit(alice.name, "session.start")
    assert starts[-1].subject == "web1"
    certs = bastion.store.list_certificates(session_id=starts[-1].details["session"])
    assert len(certs) == 1
    cert = certs[0]
    assert cert.principals == ("bastion-web1",)
    assert cert.valid_before - cert.valid_after <= 120


def test_target_named_in_command(bastion: BastionHarness) -> None:
    bob = bastion.contractor()
    bastion.grant(bob, "web2")
    r = bob.ssh("web2", "hostname >/dev/null; echo on-web2; whoami")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["on-web2", LOGIN]


def test_stdin_and_eof_are_relayed(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    r = c.ssh("sha256sum", target="web1", stdin=data)
    import hashlib

    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_exit_signal_is_relayed(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    r = c.ssh("kill -TERM $$", target="web1")
    # OpenSSH exits 255 when the remote command dies of a signal
    assert r.returncode == 255
    assert b"killed by signal" in r.stderr.lower() or r.returncode == 255


def test_paramiko_second_client(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    key = paramiko.Ed25519Key.from_private_key_file(str(c.key_path))
    transport = paramiko.Transport(("127.0.0.1", bastion.port))
    try:
        transport.start_client(timeout=10)
        remaining = transport.auth_publickey(c.login_name("web1"), key)
        assert remaining == ["keyboard-interactive"]  # partial success, as OpenSSH does
        code = c.next_code()
        left = transport.auth_interactive(
            c.login_name("web1"), lambda title, instr, prompts: [code for _ in prompts]
        )
        assert left == []
        chan = transport.open_session()
        chan.exec_command("echo paramiko-ok; exit 3")
        out = chan.makefile("rb").read()
        assert out == b"paramiko-ok\n"
        assert chan.recv_exit_status() == 3
    finally:
        transport.close()


def test_key_alone_is_not_enough(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    key = paramiko.Ed25519Key.from_private_key_file(str(c.key_path))
    transport = paramiko.Transport(("127.0.0.1", bastion.port))
    try:
        transport.start_client(timeout=10)
        remaining = transport.auth_publickey(c.login_name("web1"), key)
        assert remaining == ["keyboard-interactive"]
        assert not transport.is_authenticated()
        with pytest.raises(paramiko.SSHException):
            transport.open_session()
    finally:
        transport.close()


def test_totp_alone_is_not_offered(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    transport = paramiko.Transport(("127.0.0.1", bastion.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as e:
            transport.auth_interactive(c.name, lambda *a: [c.next_code()])
        assert e.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_wrong_totp_refused_and_audited(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    r = c.ssh("true", target="web1", code=c.wrong_code(), extra=["-o", "NumberOfPasswordPrompts=1"])
    assert r.returncode == 255
    assert b"wrong TOTP code" in r.stderr
    rows = bastion.audit(c.name, "login.failed")
    assert rows and rows[-1].details["reason"] == "wrong-code"
    assert not bastion.audit(c.name, "login.ok")


def test_reused_totp_step_refused(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    code = c.next_code()
    assert c.ssh("true", target="web1", code=code).returncode == 0
    r = c.ssh("true", target="web1", code=code, extra=["-o", "NumberOfPasswordPrompts=1"])
    assert r.returncode == 255
    assert b"already used" in r.stderr
    assert bastion.audit(c.name, "login.failed")[-1].details["reason"] == "reused-code"


def test_lockout_after_repeated_failures(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    wrong = c.wrong_code()
    for _ in range(2):  # 3 prompts per connection by default: 6 failures > 5
        c.ssh("true", target="web1", code=wrong)
    user = bastion.store.get_user(c.name)
    assert user is not None and user.locked_until is not None and user.locked_until > time.time()
    assert bastion.audit(c.name, "user.locked")
    # the right code no longer helps
    r = c.ssh("true", target="web1")
    assert r.returncode == 255
    assert b"is locked" in r.stderr
    assert bastion.audit(c.name, "login.failed")[-1].details["reason"] == "locked"
    # an admin can lift it
    assert bastion.cli("user", "unlock", c.name).returncode == 0
    assert c.ssh("true", target="web1").returncode == 0


def test_disabled_user_refused(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    assert bastion.cli("user", "disable", c.name).returncode == 0
    r = c.ssh("true", target="web1")
    assert r.returncode == 255
    assert b"is disabled" in r.stderr
    assert bastion.audit(c.name, "login.failed")[-1].details["reason"] == "disabled"
    assert bastion.audit("test-admin", "user.disable")


def test_unknown_key_refused(bastion: BastionHarness) -> None:
    a = bastion.contractor()
    b = bastion.contractor()
    bastion.grant(a, "web1")
    # b's key presented for user a
    import dataclasses

    impostor = dataclasses.replace(b, name=a.name, secret=a.secret, user=a.user)
    r = impostor.ssh("true", target="web1")
    assert r.returncode == 255
    assert not bastion.audit(a.name, "login.ok")


def test_admin_role_user_can_log_in_too(bastion: BastionHarness) -> None:
    admin = bastion.contractor("adm", Role.ADMIN)
    bastion.grant(admin, "web1")
    assert admin.ssh("true", target="web1").returncode == 0
