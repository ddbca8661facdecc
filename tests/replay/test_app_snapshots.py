"""SVG snapshots of the main screens (pytest-textual-snapshot), from the committed
fixture recordings and sample sessions with a frozen clock, so every run renders the
same pixels. Update after an intended change with ``--snapshot-update`` and review
the SVGs under ``__snapshots__/`` before committing them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.source import SessionSource, Snapshot
from tests.replay.sample_source import NOW, RECORDINGS, SampleSource
from tests.replay.test_app_live import SCREEN

Compare = Callable[..., bool]


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def console(start: Start, source: SampleSource | None = None) -> ConsoleApp:
    async def connect() -> SessionSource:
        assert source is not None
        return source

    return ConsoleApp(
        start,
        connect if source is not None else None,
        clock=ManualClock(),
        wall_clock=lambda: NOW,
        refresh_interval=None,
    )


def steps(*keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Settle (workers done, except a live watch which never is), press ``keys``, settle."""

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        finite = [w for w in pilot.app.workers if w.group != "watch"]
        if finite:
            await pilot.app.workers.wait_for_complete(finite)
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await pilot.pause(0.15)

    return run


def recording(name: str) -> str:
    return str(RECORDINGS / f"{name}.bastrec")


def test_sessions_browser(snap_compare: Compare) -> None:
    app = console(Start("browse"), SampleSource())
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps())


def test_search_results(snap_compare: Compare) -> None:
    app = console(Start("browse"), SampleSource())
    keys = ["slash", *"printf", "enter"]
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps(*keys))


def test_player_inside_vim_with_typed_input(snap_compare: Compare) -> None:
    app = console(Start("replay", path=recording("s-vim")))
    keys = ["n", "n", "n", "right", "right", "i"]
    assert snap_compare(app, terminal_size=(100, 32), run_before=steps(*keys))


def test_player_colours_at_80x24(snap_compare: Compare) -> None:
    app = console(Start("replay", path=recording("s-ls")))
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("n", "n", "n", "right"))


def test_player_database_queries(snap_compare: Compare) -> None:
    app = console(Start("replay", path=recording("s-pg")))
    assert snap_compare(app, terminal_size=(100, 24), run_before=steps("n", "n", "n", "n"))


def test_live_view(snap_compare: Compare) -> None:
    source = SampleSource(feeds={"s-live": [Snapshot("s-live", 80, 24, 600.0, SCREEN, [])]})
    app = console(Start("watch", session_id="s-live"), source)
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps())


def test_terminate_dialog(snap_compare: Compare) -> None:
    source = SampleSource(feeds={"s-live": [Snapshot("s-live", 80, 24, 600.0, SCREEN, [])]})
    app = console(Start("watch", session_id="s-live"), source)
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("t", *"incident 42"))


def test_player_help(snap_compare: Compare) -> None:
    app = console(Start("replay", path=recording("s-vim")))
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("question_mark"))


def test_requests_view(snap_compare: Compare) -> None:
    app = console(Start("browse"), SampleSource())
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("p", "down"))


def test_approve_dialog(snap_compare: Compare) -> None:
    app = console(Start("browse"), SampleSource())
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("p", "a", *"30m"))
