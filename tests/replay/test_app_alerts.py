"""Pilot tests of the alerts view on sample data (the real node: tests/bastion/alerts)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from replay.app import ConsoleApp
from replay.screens.alerts import AlertsScreen
from replay.screens.browser import BrowserScreen
from replay.screens.live import LiveScreen
from replay.screens.player import PlayerScreen
from replay.source import AlertInfo
from tests.replay.sample_source import NOW, START, SampleSource
from tests.replay.test_app_browser import console, rows, settle

LOGIN = AlertInfo(3, NOW - 60, "alert.mfa-failures", "eve", "eve", "failures=3 limit=3")
PAST = AlertInfo(
    2, START + 20, "policy.deny", "alice", "web1", "rule no-rm: command 'rm -rf /srv'",
    session="s-vim", offset=20.0, marker="policy deny",
)  # fmt: skip
LIVE = AlertInfo(
    4, NOW - 30, "alert.session-bytes-out", "carol", "web2", "bytes_out=1500000 limit=1048576",
    session="s-live", offset=570.0, live=True, marker="alert session-bytes-out",
)  # fmt: skip


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def source() -> SampleSource:
    s = SampleSource()
    s.alerts = [LIVE, LOGIN, PAST]
    s.sessions = [replace(x, alerts=1) if x.id == "s-live" else x for x in s.sessions]
    return s


async def open_alerts(app: ConsoleApp) -> AlertsScreen:
    await app.workers.wait_for_complete()
    assert isinstance(app.screen, BrowserScreen)
    assert rows(app)[0][7] == "! 1 alert"  # the live session's flag
    app.screen.action_alerts()
    return app.screen  # type: ignore[return-value]


async def test_alerts_newest_first_and_where_enter_leads() -> None:
    app = console(source())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_alerts(app)
        await settle(pilot)
        assert isinstance(app.screen, AlertsScreen)
        table = rows(app, "#alerts")
        assert [r[3] for r in table] == [
            "LIVE alert.sessio…",
            "alert.mfa-failures",
            "policy.deny",
        ]
        assert table[2][1:3] == ["alice", "web1"]
        assert table[2][4] == "rule no-rm: command 'r…"

        await pilot.press("enter")  # the live one: the live view (its watch never ends)
        for _ in range(100):
            if isinstance(app.screen, LiveScreen):
                break
            await pilot.pause(0.02)
        assert isinstance(app.screen, LiveScreen) and app.screen.session.id == "s-live"
        await pilot.press("escape")
        await settle(pilot)

        await pilot.press("down", "enter")  # at login: nothing to open
        await settle(pilot)
        assert isinstance(app.screen, AlertsScreen)

        await pilot.press("down", "enter")  # a past session: the player at the alert
        await settle(pilot)
        player = app.screen
        assert isinstance(player, PlayerScreen) and player.path.endswith("s-vim.bastrec")
        assert player.session_title == "alice@web1 · policy.deny"
