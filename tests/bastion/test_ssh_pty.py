"""Interactive sessions on a real pseudo-terminal: menu, shell, resize, time box."""

from __future__ import annotations

import time

import pexpect
import pytest

from tests.peers.bastion_node import BastionHarness, Contractor, reports_size
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _spawn(
    c: Contractor,
    bastion: BastionHarness,
    *remote: str,
    target: str | None = None,
    rows: int = 24,
    cols: int = 80,
) -> pexpect.spawn[bytes]:
    return c.ssh_pty(target, *remote, rows=rows, cols=cols, timeout=20)


def test_menu_then_shell_with_term_and_size(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g1 = bastion.grant(c, "web1")
    bastion.grant(c, "web2")
    child = _spawn(c, bastion, rows=30, cols=100)
    try:
        child.expect("choose a target")
        child.expect(f"grant #{g1.id}")
        child.expect("Number or name")
        child.send("web1\r")
        child.sendline("echo TERM=$TERM; stty size; echo marker-$((6*7))")
        child.expect("marker-42")
        before = (child.before or b"").decode()
        assert "TERM=xterm" in before or "TERM=" in before
        assert "30 100" in before
        child.setwinsize(40, 132)
        # ssh relays the SIGWINCH when it gets to it: ask until the target has the new size
        wait_until(lambda: reports_size(child, "40 132"), 20, "the target's pty to be 40x132")
        child.sendline("echo marker2-$((6*7))")
        child.expect("marker2-42")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5


def test_menu_with_no_grants(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    child = _spawn(c, bastion)
    try:
        child.expect("no active grants")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1


def test_named_target_shell_and_ctrl_c(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web2")
    child = _spawn(c, bastion, "web2")
    try:
        # The marker comes from the foreground job itself: once it shows, that job owns the
        # terminal. (bash's own echo shows before the sleep has the terminal: a Ctrl-C then
        # signals bash, the sleep runs its 30 s, and the next line waits behind it.)
        child.sendline("sh -c 'echo sleeping-$((2+3)); exec sleep 30'; echo not-interrupted")
        child.expect("sleeping-5")  # the target's sleep runs in the foreground: Ctrl-C hits it
        child.sendcontrol("c")
        child.sendline("echo after-$((1+1))")
        child.expect("after-2")
        assert child.before is not None
        assert b"\nnot-interrupted" not in child.before  # the echo of the typed line has it
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_session_warned_and_cut_at_grant_end(bastion: BastionHarness) -> None:
    # The test node warns at 3 s and 1.5 s before the end (production: 5 min and 1 min).
    c = bastion.contractor()
    g = bastion.grant(c, "web1", seconds=6)
    child = _spawn(c, bastion, target="web1")
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        child.expect(f"grant #{g.id} ends in")
        child.expect("closing this session", timeout=15)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    assert child.exitstatus == 255
    ended = bastion.wait_audit(c.name, "session.end")
    assert ended and ended[-1].details["reason"] == "grant-ended"


def test_session_cut_on_revoke(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    g = bastion.grant(c, "web1")
    child = _spawn(c, bastion, target="web1")
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        assert bastion.store.list_sessions(live=True, user=c.name)
        r = bastion.cli("grant", "revoke", str(g.id))
        assert r.returncode == 0, r.stderr
        revoked_at = time.monotonic()
        child.expect(f"grant #{g.id} was revoked", timeout=10)
        child.expect(pexpect.EOF, timeout=10)
        took = time.monotonic() - revoked_at
    finally:
        child.close()
    assert took < 10  # generous: the contract is "within a second"; CI machines are noisy
    rows = bastion.wait_audit(c.name, "session.terminated")
    assert rows and rows[-1].details["reason"] == "grant-revoked"
    assert not bastion.store.list_sessions(live=True, user=c.name)


def test_admin_lock_ends_live_sessions_and_refuses_logins(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web2")
    child = _spawn(c, bastion, target="web2")
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        r = bastion.cli("user", "lock", c.name)
        assert r.returncode == 0, r.stderr
        assert "1 live session(s) will be ended" in r.stdout
        child.expect(f"terminated by test-admin: user {c.name} locked", timeout=10)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    assert child.exitstatus == 255
    rows = bastion.wait_audit(c.name, "session.terminated")
    assert rows[-1].details["reason"] == "admin-terminated"
    r2 = c.ssh("true", target="web2")
    assert r2.returncode == 255 and b"is locked" in r2.stderr


def test_admin_terminates_one_session(bastion: BastionHarness) -> None:
    c = bastion.contractor()
    bastion.grant(c, "web1")
    child = _spawn(c, bastion, target="web1")
    try:
        child.sendline("echo started-$((2+3))")
        child.expect("started-5")
        (live,) = bastion.store.list_sessions(live=True, user=c.name)
        r = bastion.cli("sessions", "terminate", live.id, "--reason", "incident 42")
        assert r.returncode == 0, r.stderr
        child.expect("terminated by test-admin: incident 42", timeout=10)
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close()
    assert child.exitstatus == 255
    assert bastion.audit("test-admin", "session.terminate-requested")[-1].subject == live.id
    bastion.wait_audit(c.name, "session.end")
    ended = bastion.store.get_session(live.id)
    assert ended is not None and ended.end_reason == "admin-terminated"
    r = bastion.cli("sessions", "terminate", live.id, "--reason", "again")
    assert r.returncode == 1 and "already ended" in r.stderr
