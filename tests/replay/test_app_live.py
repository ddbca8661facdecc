"""Pilot tests of the live view on sample data: snapshot first, then the stream,
coalesced redraws, terminate and lock with a reason, the auditor's limits.
(The same screen against a real node: ``test_app_live_node.py``.)"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.dialogs import ReasonDialog
from replay.screens.live import LiveScreen
from replay.source import (
    LiveEnd,
    LiveInput,
    LiveMarker,
    LiveOutput,
    LiveQuery,
    LiveResize,
    SessionSource,
    Snapshot,
)
from replay.terminal import TerminalEmulator
from replay.widgets.query_table import QueryTable
from replay.widgets.terminal_view import TerminalView
from tests.replay.sample_source import NOW, SESSIONS, SampleSource, _session

SCREEN = b"\x1b[2J\x1b[Hcarol@web2:~$ uptime\r\n 11:58 up 3 days\r\ncarol@web2:~$ "


def watching(source: SampleSource) -> ConsoleApp:
    async def connect() -> SessionSource:
        return source

    return ConsoleApp(
        Start("watch", session_id="s-live"),
        connect,
        clock=ManualClock(),
        wall_clock=lambda: NOW,
        refresh_interval=None,
    )


def sample(role: str = "admin") -> SampleSource:
    snapshot = Snapshot("s-live", 80, 24, 600.0, SCREEN, [])
    return SampleSource(role=role, feeds={"s-live": [snapshot]})


async def frame(pilot: Pilot[None]) -> None:
    await pilot.pause(0.12)  # at least two 20 fps frames


def view(app: ConsoleApp) -> list[str]:
    return app.screen.query_one(TerminalView).text()


async def test_snapshot_first_then_live_output() -> None:
    source = sample()
    app = watching(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await frame(pilot)
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        assert view(app)[:3] == ["carol@web2:~$ uptime", " 11:58 up 3 days", "carol@web2:~$"]
        info = str(screen.query_one("#info", Static).render())
        assert info.startswith("● LIVE  carol@web2 (ssh)  10:00.0")
        source.push("s-live", LiveInput(601.0, b"ls\r"))
        source.push("s-live", LiveOutput(601.1, b"ls\r\nnotes.txt\r\ncarol@web2:~$ "))
        source.push("s-live", LiveResize(602.0, 100, 30))
        await frame(pilot)
        assert view(app)[2:5] == ["carol@web2:~$ ls", "notes.txt", "carol@web2:~$"]
        snap = screen.query_one(TerminalView).snapshot
        assert snap is not None and (snap.cols, snap.rows) == (100, 30)
        await pilot.press("i")
        await frame(pilot)
        assert str(screen.query_one("#typed", Static).render()) == "typed: ls⏎"


async def test_a_fast_stream_is_coalesced_into_few_redraws() -> None:
    source = sample()
    app = watching(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await frame(pilot)
        term = app.screen.query_one(TerminalView)
        shown: list[object] = []
        original = term.show

        def counting_show(snapshot: object) -> None:
            shown.append(snapshot)
            original(snapshot)  # type: ignore[arg-type]

        term.show = counting_show  # type: ignore[method-assign]
        reference = TerminalEmulator(80, 24)
        reference.feed(SCREEN)
        for i in range(2000):
            line = f"line {i}\r\n".encode()
            reference.feed(line)
            source.push("s-live", LiveOutput(600 + i / 1000, line))
        await frame(pilot)
        await frame(pilot)
        assert view(app) == reference.text()
        assert 1 <= len(shown) < 50  # 2000 events, a handful of frames


async def test_terminate_asks_for_a_reason_and_ends_the_watch() -> None:
    source = sample()
    app = watching(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await frame(pilot)
        live = app.screen
        assert isinstance(live, LiveScreen)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press("enter")  # no reason: refused in the dialog
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        assert "required" in str(app.screen.query_one("#problem").render())
        await pilot.press(*"incident 42", "enter")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await frame(pilot)
        assert app.screen_stack[-1] is app.screen and isinstance(app.screen, LiveScreen)
        assert ("terminate", "s-live", "incident 42") in source.calls
        assert live.ended == "terminated by eve: incident 42"
        assert str(live.query_one("#info", Static).render()).startswith("ENDED: terminated")
        assert live.check_action("terminate", ()) is None  # dimmed once ended


async def test_cancelled_terminate_sends_nothing_and_lock_user() -> None:
    source = sample()
    app = watching(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await frame(pilot)
        await pilot.press("t")
        await pilot.pause()
        await pilot.press(*"oops", "escape")
        await pilot.pause()
        assert isinstance(app.screen, LiveScreen)
        assert not [c for c in source.calls if c[0] == "terminate"]
        await pilot.press("L")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        app.screen.query_one("#reason", Input).value = "left the company"
        await pilot.click("#confirm")
        await pilot.pause()
        assert isinstance(app.screen, LiveScreen)
        requests = [w for w in app.workers if w.group == "request"]
        if requests:
            await app.workers.wait_for_complete(requests)
        assert ("lock_user", "carol", "left the company") in source.calls


async def test_markers_and_end_of_session() -> None:
    source = sample()
    app = watching(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await frame(pilot)
        source.push("s-live", LiveMarker(700.0, "grant ends in 1 minute"))
        source.push("s-live", LiveEnd("grant expired"))
        await frame(pilot)
        await app.workers.wait_for_complete()
        screen = app.screen
        assert isinstance(screen, LiveScreen) and screen.ended == "grant expired"
        assert any("grant ends in 1 minute" in str(n.message) for n in app._notifications)


async def test_database_session_streams_queries() -> None:
    pg = _session("s-live", "bob", "db1", "postgres", NOW - 60, None)
    first = {"seq": 1, "kind": "simple", "sql": "SELECT 1", "tag": "SELECT 1", "start": 3.0}
    source = SampleSource(
        sessions=[pg, *SESSIONS[1:]],
        feeds={"s-live": [Snapshot("s-live", 80, 24, 60.0, b"", [first])]},
    )
    app = watching(source)
    async with app.run_test(size=(100, 30)) as pilot:
        await frame(pilot)
        table = app.screen.query_one(QueryTable)
        assert table.display and not app.screen.query_one(TerminalView).display
        assert table.row_count == 1
        source.push(
            "s-live",
            LiveQuery(
                61.0,
                {
                    "seq": 2,
                    "kind": "error",
                    "sql": "DROP TABLE t",
                    "error": {"sqlstate": "42501", "message": "denied"},
                },
            ),
        )
        await frame(pilot)
        assert table.row_count == 2
        assert [str(c) for c in table.get_row_at(1)][:3] == ["1:01.0", "error", "DROP TABLE t"]


@pytest.mark.parametrize("role", ["auditor"])
async def test_auditors_get_no_terminate_or_lock(role: str) -> None:
    source = sample(role)
    app = watching(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await frame(pilot)
        screen = app.screen
        # an auditor cannot open the live view at all: "watch ID" reports it
        assert not isinstance(screen, LiveScreen)
        live = LiveScreen(source, SESSIONS[0], admin=False)
        assert live.check_action("terminate", ()) is False
        assert live.check_action("lock", ()) is False
        assert not [c for c in source.calls if c[0] in ("watch", "terminate", "lock_user")]
