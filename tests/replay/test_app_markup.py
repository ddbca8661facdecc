"""Recorded or typed text must never be read as Textual/Rich *markup* (found in review).

Static.update, Label.update, App.notify and DataTable str cells all parse markup, so
text containing ``[...]`` is either swallowed (``grep '[a-z]'`` shows as ``grep ''``)
or, with ``[/...]``, raises MarkupError and kills the console. The text comes from the
contractor (typed commands, SQL, marker labels) or from the auditor's own input.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static

from bastion.pg.query_event import QUERY_EVENT
from recorder import RecordingWriter, WriterPolicy
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.dialogs import JumpDialog
from replay.screens.live import LiveScreen
from replay.screens.player import PlayerScreen
from replay.source import LiveMarker, SearchHit, SessionSource, Snapshot
from replay.widgets.query_table import QueryTable
from tests.replay.sample_source import NOW, RECORDINGS, SampleSource

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, meta: dict[str, Any], steps: list[tuple[str, Any]]) -> str:
    clock = _Clock()
    w = RecordingWriter.create(
        path,
        "s-review",
        meta,
        KEY,
        clock=clock,
        wall_clock=lambda: NOW,
        policy=WriterPolicy(chunk_bytes=4096, fsync_interval=None),
    )
    for kind, value in steps:
        clock.now += 1.0
        getattr(w, kind)(*value) if isinstance(value, tuple) else getattr(w, kind)(value)
    clock.now += 1.0
    w.close("client disconnected")
    return str(path)


def _screen_text(app: ConsoleApp) -> str:
    """What the terminal shows (the SVG screenshot without its markup)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def _opened(pilot: Pilot[None]) -> PlayerScreen:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, PlayerScreen) and screen.indexed
    return screen


async def test_jump_dialog_error_for_bracketed_text_does_not_crash() -> None:
    """dialogs.py JumpDialog.submitted: the ValueError names the typed text and is put
    into a markup Label; typing ``[/]`` (or ``[x+``) and Enter kills the player."""
    app = ConsoleApp(Start("replay", path=str(RECORDINGS / "s-vim.bastrec")), clock=ManualClock())
    async with app.run_test(size=(80, 24)) as pilot:
        await _opened(pilot)
        await pilot.press("g")
        await pilot.pause()
        await pilot.press("left_square_bracket", "slash", "right_square_bracket", "enter")
        await pilot.pause()
        assert isinstance(app.screen, JumpDialog)
        problem = str(app.screen.query_one("#problem", Label).render())
        assert "[/]" in problem


async def test_typed_overlay_shows_brackets_verbatim(tmp_path: Path) -> None:
    """player.py _redraw: the ``i`` overlay puts recorded keystrokes into a markup
    Static: ``grep '[a-z]' log`` is shown as ``grep '' log``."""
    path = _write(
        tmp_path / "typed.bastrec",
        {"user": "alice", "target": "web1", "protocol": "ssh", "cols": 80, "rows": 24},
        [("input", b"grep '[a-z]' log\r"), ("output", b"$ grep '[a-z]' log\r\n")],
    )
    app = ConsoleApp(Start("replay", path=path), clock=ManualClock())
    async with app.run_test(size=(80, 24)) as pilot:
        await _opened(pilot)
        await pilot.press("shift+right", "i")
        await pilot.pause()
        typed = str(app.screen.query_one("#typed", Static).render())
        assert "grep '[a-z]' log" in typed


async def test_typed_overlay_with_closing_tag_does_not_crash(tmp_path: Path) -> None:
    """Same path: a recorded ``echo [/x]`` raises MarkupError when ``i`` is pressed."""
    path = _write(
        tmp_path / "typed2.bastrec",
        {"user": "alice", "target": "web1", "protocol": "ssh", "cols": 80, "rows": 24},
        [("input", b"echo [/x]\r"), ("output", b"[/x]\r\n")],
    )
    app = ConsoleApp(Start("replay", path=path), clock=ManualClock())
    async with app.run_test(size=(80, 24)) as pilot:
        await _opened(pilot)
        await pilot.press("shift+right", "i")
        await pilot.pause()
        assert "echo [/x]" in str(app.screen.query_one("#typed", Static).render())


async def test_query_table_shows_sql_with_brackets(tmp_path: Path) -> None:
    """query_table.py: str cells of a DataTable are markup; recorded SQL is shown
    altered: ``'[a-z]'`` vanishes (and ``'[/x]'`` would raise MarkupError)."""
    payload = {"kind": "simple", "sql": "SELECT name ~ '[a-z]' FROM t", "tag": "SELECT 1"}
    path = _write(
        tmp_path / "pg.bastrec",
        {"user": "bob", "target": "db1", "protocol": "postgres"},
        [("event", (QUERY_EVENT, payload))],
    )
    app = ConsoleApp(Start("replay", path=path), clock=ManualClock())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _opened(pilot)
        assert screen.query_one(QueryTable).row_count == 1
        await pilot.pause()
        assert "'[a-z]'" in _screen_text(app)


async def test_search_with_no_hits_for_bracketed_text_does_not_crash() -> None:
    """browser.py run_search: ``notify(f"nothing found for {text!r}")`` is markup."""
    source = SampleSource()

    async def connect() -> SessionSource:
        return source

    app = ConsoleApp(
        Start("browse"), connect, clock=ManualClock(), wall_clock=lambda: NOW, refresh_interval=None
    )
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"[/b]", "enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert app.is_running


async def test_search_hit_with_bracketed_command_is_listed_verbatim() -> None:
    """browser.py run_search: hit texts (commands the contractor typed) go into markup
    DataTable cells: ``[/b]`` crashes the console, ``[a-z]`` disappears."""

    class Source(SampleSource):
        async def search(self, text: str, **kw: object) -> list[SearchHit]:
            return [SearchHit("s-vim", NOW, 3.0, "grep '[a-z]' x; echo [/b]", "alice", "web1")]

    source = Source()

    async def connect() -> SessionSource:
        return source

    app = ConsoleApp(
        Start("browse"), connect, clock=ManualClock(), wall_clock=lambda: NOW, refresh_interval=None
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"grep", "enter")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert app.screen.query_one("#hits", DataTable).row_count == 1
        assert "'[a-z]'" in _screen_text(app)


async def test_live_marker_label_with_brackets_does_not_crash() -> None:
    """live.py apply: a marker label goes to ``notify`` (markup)."""
    snapshot = Snapshot("s-live", 80, 24, 600.0, b"$ ", [])
    source = SampleSource(feeds={"s-live": [snapshot]})

    async def connect() -> SessionSource:
        return source

    app = ConsoleApp(
        Start("watch", session_id="s-live"),
        connect,
        clock=ManualClock(),
        wall_clock=lambda: NOW,
        refresh_interval=None,
    )
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause(0.1)
        assert isinstance(app.screen, LiveScreen)
        source.push("s-live", LiveMarker(601.0, "grant [/expires] in 5 minutes"))
        await pilot.pause(0.3)
        assert app.is_running
