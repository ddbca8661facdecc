"""Pilot tests of the effective-access view: opened on the selected session's user, a row
per target with the way in or the reason, the grants behind the selected row; and once
against a real node, where the rows must be what ``bastion access`` answers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from bastion.control.client import ControlClient
from bastion.effective_access import user_access
from bastion.store.models import Role
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.access import AccessScreen
from replay.screens.browser import BrowserScreen
from replay.source import SessionSource
from tests.peers.bastion_node import BastionHarness
from tests.replay.sample_source import NOW, SampleSource


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def console(connect_to: SessionSource) -> ConsoleApp:
    async def connect() -> SessionSource:
        return connect_to

    return ConsoleApp(
        Start("browse"), connect, clock=ManualClock(), wall_clock=lambda: NOW,
        refresh_interval=None,
    )  # fmt: skip


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def rows(app: ConsoleApp) -> list[list[str]]:
    table = app.screen.query_one("#access", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: ConsoleApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def open_access(pilot: Pilot[None], app: ConsoleApp, session_id: str) -> AccessScreen:
    await settle(pilot)
    assert isinstance(app.screen, BrowserScreen)
    table = app.screen.query_one("#sessions", DataTable)
    table.move_cursor(row=table.get_row_index(session_id), animate=False)
    await pilot.press("u")
    await settle(pilot)
    assert isinstance(app.screen, AccessScreen)
    return app.screen


async def test_u_shows_the_selected_users_access_and_each_targets_grants() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_access(pilot, app, "s-vim")  # alice's session
        assert screen.user == "alice"
        assert "access of alice (contractor, active)" in text_of(app, "#info")
        assert "1 of 2 reachable now" in text_of(app, "#info")
        assert rows(app)[0][:2] == ["web1", "YES"]
        assert rows(app)[0][2].startswith("as deploy under grant #5 until")
        assert rows(app)[1][:2] == ["web2", "NO"]
        assert rows(app)[1][2].startswith("grant #8 starts at 2025-05-02")
        detail = text_of(app, "#access-detail")
        assert "way in: as deploy under grant #5" in detail
        assert "grant #5 direct from access request #4: usable" in detail
        await pilot.press("down")
        await pilot.pause()
        detail = text_of(app, "#access-detail")
        assert "blocked: grant #8 starts at" in detail
        assert "via profile staging-web (env=staging)" in detail and "env=staging" in detail
        await pilot.press("a")
        await settle(pilot)
        assert ("user_access", "alice", "True") in source.calls
        assert "with history" in text_of(app, "#info")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)


async def test_an_unknown_user_is_said_so() -> None:
    app = console(SampleSource())
    async with app.run_test(size=(80, 24)) as pilot:
        await open_access(pilot, app, "s-pg")  # bob: the sample node does not know him
        assert any("no user named 'bob'" in str(n.message) for n in app._notifications)
        assert rows(app) == []


@pytest.mark.integration
async def test_the_console_shows_what_the_node_answers(bastion: BastionHarness) -> None:
    """An auditor's console against a real node: the user of a real session, a reachable
    target and one whose grant has not started, word for word as ``bastion access``."""
    sock = bastion.control_socket()
    auditor = bastion.contractor("aud", Role.AUDITOR)
    c = bastion.contractor()
    bastion.grant(c, "web1")
    later = bastion.grant(c, "web2", start=time.time() + 3600)
    assert c.ssh("true", target="web1").returncode == 0
    (session,) = bastion.store.list_sessions(user=c.name)

    async def connect() -> SessionSource:
        return await ControlClient.connect(sock, user=auditor.name)

    app = ConsoleApp(Start("browse"), connect, clock=ManualClock(), refresh_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_access(pilot, app, session.id)
        assert screen.access is not None
        expected = user_access(bastion.store, c.name, screen.access.at)
        assert screen.access == expected
        assert [r[:2] for r in rows(app)] == [["web1", "YES"], ["web2", "NO"]]
        assert rows(app)[1][2].startswith(f"grant #{later.id} starts at ")
