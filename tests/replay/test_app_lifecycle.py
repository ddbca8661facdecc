"""What must not be left behind when the user leaves the player (or the console) early,
and how the console reports a recording or a session it cannot show."""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import replay.app
import replay.cache
import replay.screens.player as player_module
from recorder import LiveTail, RecordingReader, RecordingWriter, WriterPolicy
from replay.app import ConsoleApp, Start, run_console
from replay.clock import ManualClock
from replay.screens.browser import BrowserScreen
from replay.screens.player import PlayerScreen
from replay.source import SessionSource
from tests.replay.sample_source import NOW, SampleSource


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def _busy_recording(path: Path, events: int = 500) -> str:
    """About 6 MB of full-screen output (a few seconds of keyframe building)."""
    now = [0.0]
    w = RecordingWriter.create(
        path,
        "s-busy",
        {"user": "alice", "target": "web1", "protocol": "ssh", "cols": 80, "rows": 24},
        Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
        clock=lambda: now[0],
        wall_clock=lambda: NOW,
        policy=WriterPolicy(fsync_interval=None),
    )
    screen = b"".join(
        b"\x1b[%d;1H\x1b[3%dm%05d top - load average 0.%02d\x1b[0m\x1b[K"
        % (i % 24 + 1, i % 8, i, i)
        for i in range(200)
    )
    for _ in range(events):
        now[0] += 0.01
        w.output(screen)
    w.close("client disconnected")
    return str(path)


async def test_quitting_while_indexing_stops_the_indexing_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """player.py open_recording: the keyframe build runs in a thread worker that never
    looks at cancellation, so after ``q`` the process cannot exit (the default executor
    is joined) until the whole recording has been scanned: minutes for a large one."""
    path = _busy_recording(tmp_path / "busy.bastrec")
    exited = threading.Event()
    timing: dict[str, float] = {}
    real = replay.cache.open_indexed  # what the player imported

    def open_indexed(p: Any, reader: RecordingReader, stop: Any = None) -> Any:
        exited.wait(10)  # the user quits while the index is being built
        timing["start"] = time.monotonic()
        try:
            return real(p, reader, stop)
        finally:
            timing["end"] = time.monotonic()

    monkeypatch.setattr(player_module, "open_indexed", open_indexed)
    app = ConsoleApp(Start("replay", path=path), clock=ManualClock())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        assert isinstance(app.screen, PlayerScreen) and app.screen.player is not None
        await pilot.press("q")
    exited.set()
    for _ in range(100):  # let it finish either way, so no thread outlives the test
        if "end" in timing:
            break
        await asyncio.sleep(0.1)
    assert "end" in timing
    assert timing["end"] - timing["start"] < 0.5, "indexing went on after the console exited"


async def test_leaving_while_opening_closes_the_recording(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """player.py _opened/on_unmount: if the player is left (Escape) before the worker
    has opened the recording (a crashed recording without footer is indexed by a linear
    scan, which takes a while), ``_opened`` still installs the reader on the removed
    screen and nobody closes it: one leaked file per early Escape."""
    left = threading.Event()
    readers: list[RecordingReader] = []

    class SlowReader(RecordingReader):
        @classmethod
        def open(
            cls, source: str | os.PathLike[str] | BinaryIO, *, tail: LiveTail | None = None
        ) -> RecordingReader:
            left.wait(5)
            reader = RecordingReader.open(source, tail=tail)
            readers.append(reader)
            return reader

    monkeypatch.setattr(player_module, "RecordingReader", SlowReader)
    source = SampleSource()

    async def connect() -> SessionSource:
        return source

    app = ConsoleApp(
        Start("browse"), connect, clock=ManualClock(), wall_clock=lambda: NOW, refresh_interval=None
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("down", "down", "enter")  # s-htop
        await pilot.pause(0.2)
        assert isinstance(app.screen, PlayerScreen)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert isinstance(app.screen, BrowserScreen)
        left.set()
        for _ in range(50):
            await pilot.pause(0.05)
            if readers:
                break
        await pilot.pause(0.3)
    assert readers
    leaked = [r for r in readers if not r._f.closed]
    for r in leaked:
        r.close()  # not to let the ResourceWarning fail another test
    assert not leaked, "the player's recording file was never closed"


async def test_auditor_watching_by_id_gets_an_error_not_a_blank_console() -> None:
    """app.py open_live: for an auditor, ``bastion watch ID`` only notifies and returns,
    leaving an empty screen with no keys but Ctrl+C (``q``/Escape do nothing), exit 0."""
    source = SampleSource(role="auditor")

    async def connect() -> SessionSource:
        return source

    app = ConsoleApp(
        Start("watch", session_id="s-live"),
        connect,
        clock=ManualClock(),
        wall_clock=lambda: NOW,
        refresh_interval=None,
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("q")
        await pilot.pause(0.2)
        assert not app.is_running
    assert app.return_code == 1


@pytest.mark.parametrize("content", [None, b"", b"not a recording\n"])
def test_replay_of_a_missing_or_corrupt_file_reports_an_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
) -> None:
    """app.py run_console / player.py _failed: ``bastion replay FILE`` on a missing,
    empty or corrupt file opens a full-screen player whose status line says "cannot
    open"; after ``q`` nothing is printed and the exit status is 0."""
    path = tmp_path / "evidence.bastrec"
    if content is not None:
        path.write_bytes(content)
    apps: list[ConsoleApp] = []

    def run(self: ConsoleApp, **kw: object) -> None:  # headless; the user presses q
        apps.append(self)

        async def go() -> None:
            async with self.run_test(size=(80, 24)) as pilot:
                for _ in range(40):
                    await pilot.pause(0.05)
                    if not self.is_running:
                        return
                await pilot.press("q")

        asyncio.run(go())

    monkeypatch.setattr(replay.app.ConsoleApp, "run", run)
    args = argparse.Namespace(command="replay", recording=str(path), config=None, user=None)
    code = run_console(args)
    printed = capsys.readouterr().err + "".join(
        str(r) for a in apps for r in getattr(a, "_exit_renderables", [])
    )
    assert code != 0
    assert "evidence.bastrec" in printed
