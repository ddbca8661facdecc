"""Pilot tests of the sessions browser: listing, filtering, searching, opening sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.browser import BrowserScreen
from replay.screens.live import LiveScreen
from replay.screens.player import PlayerScreen
from replay.source import SessionSource
from replay.widgets.terminal_view import TerminalView
from tests.replay.sample_source import NOW, SampleSource


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def console(source: SampleSource, start: Start | None = None) -> ConsoleApp:
    async def connect() -> SessionSource:
        return source

    return ConsoleApp(
        start or Start("browse"),
        connect,
        clock=ManualClock(),
        wall_clock=lambda: NOW,
        refresh_interval=None,
    )


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def rows(app: ConsoleApp, table_id: str = "#sessions") -> list[list[str]]:
    table = app.screen.query_one(table_id, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_lists_live_and_past_sessions_newest_first() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)
        table = rows(app)
        assert [r[1] for r in table] == ["carol", "bob", "alice", "dave", "alice"]
        assert table[0][0] == "LIVE" and table[0][5] == "10m00s"  # live: now - start
        assert table[1][3:] == ["pg", "05-01 10:30", "44s", "7 ev", "client-closed"]
        assert table[3][7] == "admin-terminated"
        assert app.sub_title == "eve (admin)"


async def test_filters_by_user_target_and_dates() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await pilot.press(*"alice", "enter")
        await settle(pilot)
        assert [r[1] for r in rows(app)] == ["alice", "alice"]
        assert source.calls[-1][:3] == ("list_sessions", "None", "alice")
        app.screen.query_one("#f-user", Input).value = ""
        app.screen.query_one("#f-target", Input).value = "web2"
        app.screen.query_one("#f-since", Input).value = "2025-05-01 10:05"
        await app.screen.query_one("#f-target", Input).action_submit()
        await settle(pilot)
        assert [(r[1], r[2]) for r in rows(app)] == [("carol", "web2"), ("dave", "web2")]
        app.screen.query_one("#f-since", Input).value = "1h"  # now - 1 h = 11:00Z
        await app.screen.query_one("#f-since", Input).action_submit()
        await settle(pilot)
        assert [r[1] for r in rows(app)] == ["carol"]


async def test_a_bad_date_is_explained_and_not_applied() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        calls = len(source.calls)
        app.screen.query_one("#f-until", Input).value = "yesterday"
        await app.screen.query_one("#f-until", Input).action_submit()
        await settle(pilot)
        assert len(source.calls) == calls
        assert any("cannot read the time 'yesterday'" in str(n.message) for n in app._notifications)


async def test_live_only_toggle() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        assert [r[1] for r in rows(app)] == ["carol"]
        await pilot.press("l")
        await settle(pilot)
        assert len(rows(app)) == 5


async def test_search_opens_the_player_at_the_hit() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"before vim", "enter")
        await settle(pilot)
        hits = rows(app, "#hits")
        assert [h[1:3] for h in hits] == [["alice", "web1"]] * 3
        assert [h[3] for h in hits] == [
            "printf 'before vim\\n'",  # typed
            "demo$ printf 'before vim\\n'",  # shown (output, as the node indexes it)
            "before vim",
        ]
        browser = app.screen
        assert isinstance(browser, BrowserScreen)
        offset = browser.hits[0].offset
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PlayerScreen) and screen.player is not None
        assert screen.player.position == offset
        assert screen.query_one("#term", TerminalView).text()[-1] == "demo$ printf 'before vim\\n'"
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)
        await pilot.press("escape")  # clears the hits
        assert app.screen.query_one("#sessions").display


async def test_search_in_database_queries_and_no_result() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"audit_log", "enter")
        await settle(pilot)
        assert [(h[0], h[3]) for h in rows(app, "#hits")] == [("0:21.0", "DELETE FROM audit_log")]
        app.screen.query_one("#search", Input).value = "no-such-thing"
        await app.screen.query_one("#search", Input).action_submit()
        await settle(pilot)
        assert rows(app, "#hits") == []


async def test_enter_on_a_past_session_plays_it_and_on_a_live_one_watches() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, PlayerScreen)
        assert app.screen.path.endswith("s-htop.bastrec")
        await pilot.press("q")
        await settle(pilot)
        await pilot.press("up", "up", "enter")
        await pilot.pause()
        assert isinstance(app.screen, LiveScreen)
        assert app.screen.session.id == "s-live"


async def test_auditors_cannot_watch_but_can_replay() -> None:
    source = SampleSource(role="auditor")
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.check_action("watch", ()) is False  # hidden from the footer
        await pilot.press("w")
        await pilot.press("enter")  # the live session: an auditor gets the player
        await settle(pilot)
        assert ("watch", "s-live") not in source.calls
        assert not isinstance(app.screen, LiveScreen)


async def test_watch_start_mode_lists_only_live_sessions() -> None:
    source = SampleSource()
    app = console(source, Start("watch"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert [r[1] for r in rows(app)] == ["carol"]


async def test_help_lists_every_key_of_the_screen() -> None:
    app = console(SampleSource())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        keys = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert keys == ["enter", "w", "/", "f", "l", "r", "p", "u", "a", "escape", "?", "q"]
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)


async def test_connection_failure_exits_with_the_reason() -> None:
    async def connect() -> SessionSource:
        raise OSError("no socket at /nowhere")

    app = ConsoleApp(Start("browse"), connect, refresh_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
    assert app.return_code == 1


def test_command_line_chooses_the_first_screen(tmp_path: Path) -> None:
    from bastion.cli import build_parser
    from replay.app import start_for

    parser = build_parser()
    assert start_for(parser.parse_args(["tui", "--user", "eve"])) == Start("browse")
    assert start_for(parser.parse_args(["watch"])) == Start("watch")
    assert start_for(parser.parse_args(["watch", "01ABC"])) == Start("watch", "01ABC")
    assert start_for(parser.parse_args(["replay", "01ABC"])) == Start("replay", "01ABC")
    copy = tmp_path / "copy"
    copy.write_bytes(b"")
    assert start_for(parser.parse_args(["replay", str(copy)])) == Start("replay", path=str(copy))
    assert start_for(parser.parse_args(["replay", "s.bastrec"])).path == "s.bastrec"


async def test_a_search_hit_opens_the_player_highlighted_and_n_steps_through_matches() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"VIM", "enter")
        await settle(pilot)
        browser = app.screen
        assert isinstance(browser, BrowserScreen)
        mine = [h for h in browser.hits if h.session_id == "s-vim"]
        offsets = sorted({h.offset for h in mine})
        assert len(offsets) >= 3
        target = next(i for i, h in enumerate(browser.hits) if h.text == "before vim")
        for _ in range(target):
            await pilot.press("down")
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PlayerScreen) and screen.player is not None
        assert screen.player.position == browser.hits[target].offset
        view = screen.query_one("#term", TerminalView)
        row = view.text().index("before vim")
        lit = [
            seg.text
            for seg in view.render_line(row - view.scroll_offset.y)
            if seg.style is not None and seg.style.bgcolor is not None
            and seg.style.bgcolor.name == "yellow"
        ]  # fmt: skip
        assert lit == ["vim"]  # the match, not the whole line
        here = offsets.index(screen.player.position)
        await pilot.press("n")
        await settle(pilot)
        assert screen.player.position == offsets[here + 1]
        await pilot.press("N")
        await pilot.press("N")
        await settle(pilot)
        assert screen.player.position == offsets[here - 1]
