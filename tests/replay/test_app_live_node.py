"""The console against a real node: a contractor works in a real shell (stock ``ssh``
on a pty, through the bastion, on a real sshd) while the TUI watches through the real
``ControlClient``; the TUI's screen must match the contractor's, and terminating from
the TUI must end the contractor's session and leave an audit row."""

from __future__ import annotations

import asyncio
import io
import time

import pexpect
import pytest
from textual.pilot import Pilot

from bastion.control.client import ControlClient
from bastion.store.models import Role
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.dialogs import ReasonDialog
from replay.screens.live import LiveScreen
from replay.source import SessionSource
from replay.terminal import TerminalEmulator
from replay.widgets.terminal_view import TerminalView
from tests.peers.bastion_node import BastionHarness

pytestmark = pytest.mark.integration


def _client_screen(received: bytes) -> list[str]:
    """What the contractor's 80x24 terminal shows, from every byte ssh printed."""
    emu = TerminalEmulator(80, 24)
    emu.feed(received)
    return emu.text()


async def _until(
    pilot: Pilot[None], check: object, what: str, detail: object = None, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            shown = detail() if detail is not None else ""  # type: ignore[operator]
            raise AssertionError(f"timed out waiting for {what}{shown}")
        await pilot.pause(0.05)


async def test_tui_watches_a_real_session_and_terminates_it(bastion: BastionHarness) -> None:
    sock = bastion.control_socket()
    admin = bastion.contractor("adm", Role.ADMIN)
    c = bastion.contractor()
    bastion.grant(c, "web1")
    child = c.ssh_pty("web1")
    received = io.BytesIO()
    child.logfile_read = received
    try:
        child.sendline("seq 1 40; printf '\\033[1;31mred\\033[0m before-%s\\n' tui")
        await asyncio.to_thread(child.expect, "red.*before-tui")
        (live,) = bastion.store.list_sessions(live=True, user=c.name)

        async def connect() -> SessionSource:
            return await ControlClient.connect(sock, user=admin.name)

        app = ConsoleApp(
            Start("watch", session_id=live.id), connect, clock=ManualClock(), refresh_interval=None
        )
        async with app.run_test(size=(100, 32)) as pilot:
            await _until(pilot, lambda: isinstance(app.screen, LiveScreen), "the live view")
            screen = app.screen
            assert isinstance(screen, LiveScreen)
            await _until(pilot, lambda: screen.started, "the snapshot")
            view = screen.query_one(TerminalView)

            def client_screen() -> list[str]:
                try:  # take in what ssh printed since the last expect (the prompt...)
                    child.read_nonblocking(65536, timeout=0)
                except (pexpect.TIMEOUT, pexpect.EOF):
                    pass
                return _client_screen(received.getvalue())

            def same() -> bool:
                return view.text() == client_screen()

            def diff() -> str:
                return f"\nTUI:    {view.text()}\nclient: {client_screen()}"

            # late joiner: the current screen, as the contractor sees it
            await _until(pilot, same, "the snapshot to match the client's screen", diff)
            assert any("before-tui" in line for line in view.text())

            # then the live stream: more output, a full-screen redraw
            child.sendline("clear; printf 'row %s\\n' a b c; echo after-$((3+4))")
            await asyncio.to_thread(child.expect, "after-7")
            await _until(pilot, same, "the live screen to match the client's screen", diff)
            assert view.text()[:4] == ["row a", "row b", "row c", "after-7"]
            snap = view.snapshot
            assert snap is not None and (snap.cols, snap.rows) == (80, 24)

            # terminate from the TUI, with a reason the contractor sees
            await pilot.press("t")
            await _until(pilot, lambda: isinstance(app.screen, ReasonDialog), "the dialog")
            await pilot.press(*"tui test 9", "enter")
            await asyncio.to_thread(child.expect, f"terminated by {admin.name}: tui test 9", 15)
            await asyncio.to_thread(child.expect, pexpect.EOF, 15)
            await _until(pilot, lambda: screen.ended is not None, "the end of the watch")
            assert screen.ended == "admin-terminated"
    finally:
        child.close()
    rows = bastion.wait_audit(admin.name, "session.terminate-requested")
    assert [r.subject for r in rows] == [live.id]
    assert bastion.audit(admin.name, "control.watch")
    ended = bastion.store.get_session(live.id)
    assert ended is not None and ended.end_reason == "admin-terminated"
