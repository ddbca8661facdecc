"""``bastion audit --follow``: a feed killed and resumed from its cursor misses nothing.

Writers append through the real store (two connections, so on PostgreSQL they
race for the audit lock) while the real CLI runs as a subprocess; the feed is
killed mid-stream, resumed with ``--after`` and compared with the table.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from bastion.cli_node import init_dir
from bastion.config import Config
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store

ROWS_PER_WRITER = 60
WAIT = 30.0


class Feed:
    """``bastion audit --follow --json`` in a subprocess, its complete lines in a queue."""

    def __init__(self, config: Config, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "audit", "--follow", "--json",
             "--interval", "0.05", "--config", str(config.path), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "BASTION_ACTOR": "test-admin"},
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, out: IO[str]) -> None:
        for line in out:
            if line.endswith("\n"):  # a line cut by the kill is not a row
                self.lines.put(json.loads(line))

    def take(self, *, until: int = 0, count: int = 0) -> list[dict[str, Any]]:
        """Rows until ``count`` came and one has cursor >= ``until`` (fails after WAIT s)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT
        while len(got) < count or (until and (not got or got[-1]["cursor"] < until)):
            left = deadline - time.monotonic()
            assert left > 0, (
                f"feed stalled after {got[-1:]} (poll {self.proc.poll()}); stderr: {self.stop()}"
            )
            try:
                got.append(self.lines.get(timeout=left))
            except queue.Empty:
                continue
        return got

    def kill(self) -> list[dict[str, Any]]:
        """Kill the feed as a crash would; the rows it printed before dying."""
        self.proc.kill()
        self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        rest: list[dict[str, Any]] = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rest

    def stop(self) -> str:
        self.proc.kill()
        _out, err = self.proc.communicate(timeout=WAIT)
        return err


def _open(config: Config) -> Store:
    return open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))


def _write(store: Store, who: str, started: threading.Event, killed: threading.Event) -> None:
    """Half the rows while the first feed runs, the rest once it was killed."""
    started.wait(WAIT)
    for i in range(ROWS_PER_WRITER):
        if i == ROWS_PER_WRITER // 2:
            killed.wait(WAIT)
        store.append_audit(who, "node.reload", f"row-{i}", {"i": i})
        time.sleep(0.003)  # pacing only: spreads the rows across many polls


def _kill_and_resume(config: Config) -> None:
    stores = [_open(config) for _ in range(3)]
    started, killed = threading.Event(), threading.Event()
    writers = [
        threading.Thread(target=_write, args=(stores[i], f"writer{i}", started, killed))
        for i in (0, 1)
    ]
    for w in writers:
        w.start()
    first = Feed(config, "--after", "0")
    try:
        started.set()
        seen = first.take(count=ROWS_PER_WRITER // 2)
        seen += first.kill()
        resume_at = seen[-1]["cursor"]
        killed.set()
        second = Feed(config, "--after", str(resume_at))
        for w in writers:
            w.join(WAIT)
        final = stores[2].last_audit_id()
        seen += second.take(until=final)
        second.stop()
    finally:
        killed.set()
        first.stop()
        for s in stores:
            s.close()

    table = _open(config)
    try:
        rows = table.audit_after(0, limit=10_000)
    finally:
        table.close()
    cursors = [r["cursor"] for r in seen]
    assert len(cursors) == len(set(cursors)), "a row was printed twice"
    assert cursors == sorted(cursors)
    assert cursors == [r.id for r in rows], "the feed and the table differ"
    assert len(rows) >= 2 * ROWS_PER_WRITER
    assert [r["hash"] for r in seen] == [r.hash for r in rows]
    assert all(r["id"] == r["cursor"] for r in seen)


def test_feed_resumes_without_gap_or_duplicate_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    _kill_and_resume(init_dir(tmp_path / "node", "127.0.0.1:0", None, "n1"))


@pytest.mark.integration
def test_feed_resumes_without_gap_or_duplicate_on_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    _kill_and_resume(init_dir(tmp_path / "node", "127.0.0.1:0", pg_url, "n1"))


def test_after_without_follow_prints_the_rows_after_the_cursor_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    config = init_dir(tmp_path / "node", "127.0.0.1:0", None, "n1")
    store = _open(config)
    try:
        ids = [store.append_audit("root", "user.add", f"u{i}").id for i in range(4)]
    finally:
        store.close()
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "audit", "--after", str(ids[1]), "--json",
         "--config", str(config.path)],
        capture_output=True, text=True, timeout=WAIT, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["cursor"] for r in rows] == ids[2:]
    assert [r["subject"] for r in rows] == ["u2", "u3"]
