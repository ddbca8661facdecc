"""Pilot test: a command held for approval in an approver's console, against a real node.

The held command is a row of the requests view (``HELD``, the command itself),
its detail names the session, ``w`` watches that session live (approvers may watch
only such a session), and approving it from the console lets the command run on
the real target.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from textual.widgets import DataTable

from bastion.control.client import ControlClient
from bastion.control.messages import ControlError
from bastion.store.models import AccessRequest, RequestKind, RequestState, Role
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.live import LiveScreen
from replay.screens.requests import RequestsScreen
from replay.source import SessionSource
from replay.widgets.request_detail import RequestDetail
from tests.peers.bastion_node import BastionHarness
from tests.replay.test_app_requests import notified, rows, settle
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


async def test_held_command_is_watched_and_approved_in_the_console(
    bastion: BastionHarness, tmp_path: Path
) -> None:
    sock = bastion.control_socket()
    approver = bastion.contractor("hap", Role.APPROVER)
    c = bastion.contractor("hcon")
    bastion.grant(c, "web1")
    rule = f"hold-touch-{c.name}"  # only this contractor: the node is shared by other tests
    add = ("policy", "add", rule, "--command", "touch", "--action", "hold", "--user", c.name)
    r = bastion.cli(*add)
    assert r.returncode == 0, r.stderr
    made = tmp_path / "console-approved"
    proc: subprocess.Popen[bytes] = c.ssh_stream("web1", f"touch {made}")
    try:

        def held() -> AccessRequest | None:
            found = bastion.store.list_requests(user_id=c.user.id, state=RequestState.PENDING)
            return next((x for x in found if x.kind is RequestKind.COMMAND), None)

        request = wait_until(held, 30, "the held command")
        assert request is not None and request.held is not None

        async def connect() -> SessionSource:
            return await ControlClient.connect(sock, user=approver.name)

        app = ConsoleApp(Start("browse"), connect, clock=ManualClock(), refresh_interval=None)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, RequestsScreen)
            table = screen.query_one("#requests", DataTable)
            table.move_cursor(row=table.get_row_index(str(request.id)), animate=False)
            await pilot.pause()
            row = rows(app)[table.get_row_index(str(request.id))]
            assert row[1] == "HELD" and row[3].startswith("touch")
            detail = str(screen.query_one(RequestDetail).render())
            assert f"held command: touch {made}" in detail
            assert f"session {request.held.session_id}" in detail
            await pilot.press("w")
            await pilot.pause()  # the watch worker streams until the screen is left
            live = app.screen
            assert isinstance(live, LiveScreen) and live.session.id == request.held.session_id
            for _ in range(200):  # the snapshot arrives over the control socket
                if live.started or live.ended:
                    break
                await pilot.pause(0.05)
            assert live.started and live.ended is None, live.ended
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen
            await pilot.press("a")
            await pilot.pause()
            await pilot.press("enter")  # approve as it is
            await settle(pilot)
            assert notified(app, f"request #{request.id} approved")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert made.exists()
        assert f"approved by {approver.name}".encode() in err
        client = await ControlClient.connect(sock, user=approver.name)
        try:  # decided: the approver may no longer watch that session
            with pytest.raises(ControlError, match="approvers watch only a session whose held"):
                async for _event in client.watch(request.held.session_id):
                    pass
        finally:
            await client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        bastion.cli("policy", "remove", rule)
