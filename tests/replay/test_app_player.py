"""Pilot tests of the player: playing on an injected clock, speed, seeking, jumping,
command/marker navigation, the typed-input overlay, database query timelines."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from recorder import RecordingReader
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.keyframes import apply_event
from replay.screens.player import PlayerScreen
from replay.terminal import TerminalEmulator
from replay.widgets.query_table import QueryTable
from replay.widgets.terminal_view import TerminalView
from replay.widgets.timeline import Timeline
from tests.replay.sample_source import RECORDINGS


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def reference(name: str, time: float) -> list[str]:
    with RecordingReader.open(RECORDINGS / f"{name}.bastrec") as r:
        emu = TerminalEmulator(80, 24)
        for event in r.events():
            if event.time > time:
                break
            apply_event(emu, event)
        return emu.text()


async def open_player(pilot: Pilot[None]) -> PlayerScreen:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, PlayerScreen) and screen.player is not None and screen.indexed
    return screen


def position(screen: PlayerScreen) -> float:
    assert screen.player is not None
    return screen.player.position


def shown(screen: PlayerScreen) -> list[str]:
    return screen.query_one(TerminalView).text()


def player_app(name: str, clock: ManualClock | None = None) -> ConsoleApp:
    path = str(RECORDINGS / f"{name}.bastrec")
    return ConsoleApp(Start("replay", path=path), clock=clock or ManualClock())


async def test_plays_on_the_clock_and_pauses() -> None:
    clock = ManualClock()
    app = player_app("s-vim", clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        assert shown(screen) == reference("s-vim", 0.0)
        clock.advance(3)
        await pilot.pause(0.15)  # frame timer runs; paused: nothing moves
        assert position(screen) == 0.0
        await pilot.press("space")
        clock.advance(3)
        await pilot.pause(0.15)
        assert position(screen) == pytest.approx(3.0)
        assert shown(screen) == reference("s-vim", 3.0)
        assert str(screen.query_one("#info", Static).render()).startswith("▶ 0:03.0 / 1:16.0  1x")
        await pilot.press("space")
        clock.advance(3)
        await pilot.pause(0.15)
        assert position(screen) == pytest.approx(3.0)


async def test_speed_keys_change_how_fast_time_passes() -> None:
    clock = ManualClock()
    app = player_app("s-vim", clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        await pilot.press("s")  # play idle gaps in full: only the speed counts
        await pilot.press("plus", "plus", "space")  # 4x
        clock.advance(1)
        await pilot.pause(0.15)
        assert position(screen) == pytest.approx(4.0)
        assert screen.player is not None and screen.player.speed == 4.0
        await pilot.press(*["minus"] * 6)
        assert screen.player.speed == 0.25
        clock.advance(2)
        await pilot.pause(0.15)
        assert position(screen) == pytest.approx(4.5)


async def test_seek_keys_and_jump_dialog() -> None:
    app = player_app("s-vim")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        await pilot.press("shift+right")
        assert position(screen) == 60.0
        await pilot.press("left", "left")
        assert position(screen) == 50.0
        assert shown(screen) == reference("s-vim", 50.0)
        await pilot.press("shift+left")
        assert position(screen) == 0.0
        await pilot.press("right")
        assert position(screen) == 5.0
        await pilot.press("g")
        await pilot.pause()
        await pilot.press(*"0:15", "enter")
        await pilot.pause()
        assert position(screen) == 15.0
        assert shown(screen) == reference("s-vim", 15.0)
        assert app.screen is screen
        await pilot.press("g")
        await pilot.pause()
        await pilot.press(*"soon", "enter")  # not a time: the dialog stays and says why
        await pilot.pause()
        assert "cannot read the time 'soon'" in str(app.screen.query_one("#problem").render())
        await pilot.press("escape")
        assert app.screen is screen and position(screen) == 15.0


async def test_alternate_screen_is_shown_inside_vim_and_left_after() -> None:
    app = player_app("s-vim")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_player(pilot)
        await pilot.press("n", "n", "n")  # the vim command line
        await pilot.press("right", "right")
        snap = screen.query_one(TerminalView).snapshot
        assert snap is not None and snap.alternate
        assert shown(screen)[0] == "Hello, bastion!"
        await pilot.press("shift+right")
        snap = screen.query_one(TerminalView).snapshot
        assert snap is not None and not snap.alternate
        assert "after vim" in shown(screen)


async def test_next_previous_command_and_marker_keys() -> None:
    app = player_app("s-vim")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        assert screen.player is not None
        commands = screen.player.command_times()
        await pilot.press("n")
        assert position(screen) == commands[0]
        await pilot.press("n", "n")
        assert position(screen) == commands[2]
        await pilot.press("p")
        assert position(screen) == commands[1]
        marker = screen.player.marker_times()[0]
        await pilot.press("right_square_bracket")
        assert position(screen) == marker
        await pilot.press("right_square_bracket")  # no next marker: stays, says so
        assert position(screen) == marker
        assert any("no next marker" in str(n.message) for n in app._notifications)
        await pilot.press("left_square_bracket")
        assert position(screen) == marker  # nothing before it either


async def test_typed_input_overlay_toggles() -> None:
    app = player_app("s-vim")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        typed = screen.query_one("#typed", Static)
        assert not typed.display
        await pilot.press("n", "i")
        assert typed.display
        assert str(typed.render()) == "typed: seq 1 30⏎"
        await pilot.press("i")
        assert not typed.display


async def test_idle_key_plays_gaps_in_full() -> None:
    clock = ManualClock()
    app = player_app("s-vim", clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        await pilot.press("g")
        await pilot.pause()
        await pilot.press(*"35", "enter", "s", "space")  # in the 40 s pause before exit
        clock.advance(5)
        await pilot.pause(0.15)
        assert position(screen) == pytest.approx(40.0)
        await pilot.press("s")  # idle gaps cut again: jumps to the next event
        clock.advance(0.5)
        await pilot.pause(0.15)
        assert position(screen) > 70


async def test_timeline_shows_activity_commands_and_click_seeks() -> None:
    app = player_app("s-vim")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_player(pilot)
        timeline = screen.query_one(Timeline)
        assert len(timeline.commands) == 6 and len(timeline.markers) == 1
        assert timeline.render_line(1).text.count("▲") == 6
        await pilot.click(Timeline, offset=(40, 0))
        await pilot.pause()
        assert screen.player is not None
        assert position(screen) == pytest.approx(40 / 80 * screen.player.duration)


async def test_database_session_shows_the_query_table_with_filter_and_seek() -> None:
    app = player_app("s-pg")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_player(pilot)
        assert screen.database
        assert not screen.query_one(TerminalView).display
        table = screen.query_one(QueryTable)
        assert table.row_count == 7
        row = [str(c) for c in table.get_row_at(3)]
        assert row[:3] == ["0:21.0", "error", "DELETE FROM audit_log"]
        assert row[5] == "42501 permission denied for t…"  # cut to the column
        assert [str(c) for c in table.get_row_at(6)][6] == "'hello', \\x00ff"
        await pilot.press("n", "n")
        assert position(screen) == 9.0 and table.cursor_row == 1
        await pilot.press("slash", *"customers", "enter")
        assert table.row_count == 3
        await pilot.press("n")  # next *shown* query after 0:09: the UPDATE at 0:15
        assert position(screen) == 15.0
        await pilot.press("n")
        assert position(screen) == 33.0  # COPY customers
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press("escape")  # leaves the filter, not the player
        assert app.screen is screen and app.focused is None


async def test_unreadable_file_is_reported() -> None:
    app = ConsoleApp(Start("replay", path="/nonexistent/x.bastrec"), clock=ManualClock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        info = str(app.screen.query_one("#info", Static).render())
        assert "cannot open /nonexistent/x.bastrec" in info
