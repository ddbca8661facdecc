"""The control API on a real node: real contractors on real sshd targets, a real client."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from bastion.control.auth import token_hash
from bastion.control.client import ControlClient
from bastion.control.messages import ControlError, LiveEnd, LiveEvent, LiveOutput, Snapshot
from bastion.request_flow import RequestFlow
from bastion.store.models import Role, TokenPurpose
from recorder import RecordingReader
from recorder.events import Output
from replay.terminal import TerminalEmulator
from tests.peers.bastion_node import BastionHarness, Contractor

pytestmark = pytest.mark.integration


def _live_id(bastion: BastionHarness, c: Contractor) -> str:
    (live,) = bastion.store.list_sessions(live=True, user=c.name)
    return live.id


async def test_who_may_connect_and_what_they_may_do(bastion: BastionHarness) -> None:
    sock = bastion.control_socket()
    admin = bastion.contractor("adm", Role.ADMIN)
    auditor = bastion.contractor("aud", Role.AUDITOR)
    contractor = bastion.contractor()
    async with await ControlClient.connect(sock, user=admin.name) as client:
        assert (await client.whoami()).role == "admin"
        assert client.node == "test-node"
    async with await ControlClient.connect(sock, user=auditor.name) as client:
        assert (await client.whoami()).name == auditor.name
        await client.list_sessions(limit=5)
        with pytest.raises(ControlError, match="needs the admin role"):
            async for _ in client.watch("01XXXXXXXXXXXXXXXXXXXXXXXX"):
                pass
        with pytest.raises(ControlError, match="needs the admin role"):
            await client.terminate("01XXXXXXXXXXXXXXXXXXXXXXXX", "no")
        with pytest.raises(ControlError, match="needs the admin role"):
            await client.lock_user(contractor.name, "no")
    with pytest.raises(ControlError, match="for admins, auditors and approvers"):
        await ControlClient.connect(sock, user=contractor.name)
    with pytest.raises(ControlError, match="no bastion user named 'nobody-here'"):
        await ControlClient.connect(sock, user="nobody-here")


def test_control_cli_and_control_token(bastion: BastionHarness) -> None:
    admin = bastion.contractor("adm", Role.ADMIN)
    contractor = bastion.contractor()
    r = bastion.cli("control", "sessions", "--as", admin.name, "--json")
    assert r.returncode == 0, r.stderr
    r = bastion.cli("control", "sessions", "--as", contractor.name)
    assert r.returncode == 1 and "for admins, auditors and approvers" in r.stderr
    r = bastion.cli("user", "control-token", admin.name, "--ttl", "1h")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    record = bastion.store.find_token(token_hash(token))
    assert record is not None and record.user_name == admin.name
    assert record.purpose == TokenPurpose.CONTROL
    r = bastion.cli("user", "control-token", contractor.name)
    assert r.returncode == 1 and "for admins, auditors and approvers" in r.stderr


async def _collect(client: ControlClient, sid: str, got: list[LiveEvent]) -> None:
    async for event in client.watch(sid):
        got.append(event)


async def _wait_for(pred: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_watch_then_terminate_a_live_shell(bastion: BastionHarness) -> None:
    sock = bastion.control_socket()
    admin = bastion.contractor("adm", Role.ADMIN)
    c = bastion.contractor()
    bastion.grant(c, "web1")
    child = c.ssh_pty("web1")
    received = io.BytesIO()
    child.logfile_read = received
    got: list[LiveEvent] = []
    try:
        child.sendline("for i in $(seq 1 60); do echo before-$i; done; echo ok-$((1+1))")
        await asyncio.to_thread(child.expect, "ok-2")
        sid = _live_id(bastion, c)
        async with await ControlClient.connect(sock, user=admin.name) as client:
            watch = asyncio.create_task(_collect(client, sid, got))
            await _wait_for(lambda: got)
            child.sendline("printf '\\033[31mred\\033[0m\\n'; seq 1 30; echo after-$((2+3))")
            await asyncio.to_thread(child.expect, "after-5")
            await client.terminate(sid, "incident 7")
            await asyncio.to_thread(child.expect, f"terminated by {admin.name}: incident 7", 15)
            await asyncio.to_thread(child.expect, pexpect.EOF, 15)
            await asyncio.wait_for(watch, 20)
    finally:
        child.close()
    snap = got[0]
    assert isinstance(snap, Snapshot) and (snap.cols, snap.rows) == (80, 24)
    assert isinstance(got[-1], LiveEnd) and got[-1].reason == "admin-terminated"
    live = b"".join(e.data for e in got if isinstance(e, LiveOutput))
    assert b"after-5" in live and b"before-60" not in live  # the stream starts after joining
    # Snapshot + stream are exactly the tail of what the contractor's terminal received ...
    watched = snap.screen_bytes + live
    assert watched in received.getvalue()
    # ... and of the recording, to the last byte.
    bastion.wait_audit(c.name, "session.end")
    with RecordingReader.open(await _path(sock, admin.name, sid)) as reader:
        recorded = b"".join(e.data for e in reader.events() if isinstance(e, Output))
    assert recorded.endswith(watched)
    whole, late = TerminalEmulator(80, 24), TerminalEmulator(80, 24)
    whole.feed(recorded)
    late.feed(watched)
    assert late.text() == whole.text()
    rows = bastion.audit(admin.name, "control.")
    assert {r.action for r in rows} == {"control.watch"}
    (row,) = bastion.audit(admin.name, "session.terminate-requested")  # as from the CLI
    assert row.details["via"] == "control" and row.details["admin"] == admin.name
    assert all(r.subject == sid for r in [*rows, row])
    ended = bastion.store.get_session(sid)
    assert ended is not None and ended.end_reason == "admin-terminated"


async def _path(sock: str, user: str, sid: str) -> str:
    async with await ControlClient.connect(sock, user=user) as client:
        path = await client.recording_path(sid)
        hits = await client.list_sessions(user=None, limit=500)
        assert any(s.id == sid and not s.live for s in hits)
        return path


async def test_lock_user_ends_sessions_and_refuses_logins(bastion: BastionHarness) -> None:
    sock = bastion.control_socket()
    admin = bastion.contractor("adm", Role.ADMIN)
    c = bastion.contractor()
    bastion.grant(c, "web2")
    child = c.ssh_pty("web2")
    try:
        child.sendline("echo up-$((3+4))")
        await asyncio.to_thread(child.expect, "up-7")
        async with await ControlClient.connect(sock, user=admin.name) as client:
            await client.lock_user(c.name, "leaked key")
        await asyncio.to_thread(
            child.expect, f"terminated by {admin.name}: user {c.name} locked: leaked key", 15
        )
        await asyncio.to_thread(child.expect, pexpect.EOF, 15)
    finally:
        child.close()
    (row,) = bastion.audit(admin.name, "user.lock")  # the same action as 'bastion user lock'
    assert row.subject == c.name and row.details["reason"] == "leaked key"
    assert row.details["via"] == "control" and len(row.details["sessions"]) == 1
    r = await asyncio.to_thread(c.ssh, "true", target="web2")
    assert r.returncode == 255 and b"is locked" in r.stderr


async def test_late_joiner_after_50_mb_gets_the_current_screen(
    bastion: BastionHarness, tmp_path: Path
) -> None:
    sock = bastion.control_socket()
    admin = bastion.contractor("adm", Role.ADMIN)
    c = bastion.contractor()
    bastion.grant(c, "web1")
    out_path = tmp_path / "client.out"
    cmd = [
        "ssh",
        *c.ssh_args(),
        "-tt",
        "-p",
        str(bastion.port),
        f"{c.login_name('web1')}@127.0.0.1",
        "seq 1 7000000; echo MARK-$((40+2)); sleep 60",
    ]
    with open(out_path, "wb") as out:  # noqa: ASYNC230  test set-up
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, env=c.ssh_env())  # noqa: ASYNC220  test set-up
    try:
        await _wait_for(lambda: b"MARK-42" in out_path.read_bytes()[-100:], timeout=90)
        assert out_path.stat().st_size > 50_000_000
        sid = _live_id(bastion, c)
        async with await ControlClient.connect(sock, user=admin.name) as client:
            events = client.watch(sid)
            snap = await anext(events)
            assert isinstance(snap, Snapshot)
            assert len(snap.screen_bytes) < 1_000_000  # a cut, not the whole session
            screen = TerminalEmulator(snap.cols, snap.rows)
            screen.feed(snap.screen_bytes)
            text = [line for line in screen.text() if line]
            assert text[-3:] == ["6999999", "7000000", "MARK-42"]
            await client.terminate(sid, "done")
            async for event in events:
                if isinstance(event, LiveEnd):
                    assert event.reason == "admin-terminated"
                    break
    finally:
        proc.kill()
        proc.wait()


async def test_approvers_list_approve_and_deny_requests(bastion: BastionHarness) -> None:
    sock = bastion.control_socket()
    approver = bastion.contractor("apr", Role.APPROVER)
    auditor = bastion.contractor("aud", Role.AUDITOR)
    admin = bastion.contractor("adm", Role.ADMIN)
    c = bastion.contractor()
    flow = RequestFlow(bastion.store, bastion.config.requests)
    asked = flow.create(c.user, targets=["web1"], duration=7200, reason="JIRA-7")
    other = flow.create(c.user, targets=["web2"], duration=600, reason="JIRA-8")
    own = flow.create(admin.user, targets=["web1"], duration=600, reason="mine")
    async with await ControlClient.connect(sock, user=auditor.name) as client:
        listed = {r.id: r for r in await client.list_requests(pending_only=True)}
        assert listed[asked.request.id].reason == "JIRA-7"
        assert approver.name in listed[asked.request.id].approvers
        with pytest.raises(ControlError, match="needs the approver or admin role"):
            await client.approve_request(asked.request.id)
    async with await ControlClient.connect(sock, user=admin.name) as client:
        with pytest.raises(ControlError, match="own request"):
            await client.approve_request(own.request.id)
    async with await ControlClient.connect(sock, user=approver.name) as client:
        assert (await client.whoami()).role == "approver"
        with pytest.raises(ControlError, match="approvers can list, approve and deny"):
            await client.list_sessions()
        with pytest.raises(ControlError, match="never lengthen it"):
            await client.approve_request(asked.request.id, duration=3 * 3600)
        done = await client.approve_request(asked.request.id, duration=1800, reason="half")
        assert done.state == "approved" and len(done.grants) == 1
        assert [h.who for h in done.history] == [c.name, approver.name, approver.name]
        denied = await client.deny_request(other.request.id, "not today")
        assert denied.state == "denied" and denied.decision_reason == "not today"
        with pytest.raises(ControlError, match="is denied, not pending"):
            await client.approve_request(other.request.id)
        recent = {r.id: r.state for r in await client.list_requests()}
        assert recent[asked.request.id] == "approved" and recent[other.request.id] == "denied"
    (grant,) = bastion.store.list_grants(user_id=c.user.id)
    assert grant.request_id == asked.request.id and grant.approved_by == approver.name
    assert grant.not_after - grant.not_before == 1800
    (row,) = bastion.audit(approver.name, "request.approved")
    assert row.details["via"] == "control" and row.details["node"] == "test-node"
    (row,) = bastion.audit(approver.name, "request.denied")
    assert row.details["reason"] == "not today" and row.details["via"] == "control"
