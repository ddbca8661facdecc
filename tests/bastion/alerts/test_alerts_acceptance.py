"""Issue 15's alerts acceptance: one real node, real sshd targets, stock ssh and scp.

Alerts are driven the way a contractor would cause them (wrong MFA codes, a rule
in warn mode, too much output, a large download, a session still running with
alerts) and must reach every place the contract names: a real webhook receiver
(HMAC checked), real syslog receivers over UDP and a Unix datagram socket (RFC 5424
checked), ``bastion audit --follow`` (killed and resumed from its cursor: no gap,
no duplicate), markers in the recordings, and the console (Pilot): the live
session's flag in the sessions list, the alerts view newest first, and Enter
opening the player at the alert's marker or the live view.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import DataTable

from bastion.control.alert_view import is_alert
from bastion.control.client import ControlClient
from bastion.notify.webhook import SIGNATURE_HEADER, sign
from bastion.store.models import Role
from recorder import Marker, RecordingReader
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.alerts import AlertsScreen
from replay.screens.browser import BrowserScreen
from replay.screens.live import LiveScreen
from replay.screens.player import PlayerScreen
from replay.source import SessionSource
from tests.bastion.notify.receivers import HttpReceiver, http_receiver, parse_rfc5424
from tests.bastion.test_audit_feed import Feed
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

AUTHPRIV_WARNING = 10 * 8 + 4
ONE_PROMPT = ["-o", "NumberOfPasswordPrompts=1"]
DRIVEN = {
    "alert.mfa-failures",
    "policy.warn",
    "alert.session-bytes-out",
    "alert.file-bytes-out",
}


@dataclass
class Datagrams:
    """A datagram socket read by a thread: every message it got."""

    sock: socket.socket
    got: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            with self.lock:
                self.got.append(data)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def events(self) -> dict[str, dict[str, str]]:
        """The parsed RFC 5424 messages by event name (checked as they are parsed)."""
        with self.lock:
            lines = list(self.got)
        out: dict[str, dict[str, str]] = {}
        for line in lines:
            fields = parse_rfc5424(line)
            out[fields["msgid"]] = fields
        return out


@pytest.fixture
def udp() -> Iterator[Datagrams]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        d = Datagrams(s)
        reader = d.start()
        yield d
        d.stopped.set()
        reader.join(10)


@pytest.fixture
def unix_log() -> Iterator[tuple[str, Datagrams]]:
    where = Path(tempfile.mkdtemp(prefix="bsl", dir="/tmp"))  # AF_UNIX paths are short
    path = str(where / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        d = Datagrams(s)
        reader = d.start()
        try:
            yield path, d
        finally:
            d.stopped.set()
            reader.join(10)
            shutil.rmtree(where, ignore_errors=True)


def _node(tmp_path: Path, receiver: HttpReceiver, udp_port: int, unix_path: str) -> BastionHarness:
    secret = tmp_path / "webhook.secret"
    secret.write_text("s3cret-for-hmac\n")
    sinks = (
        f'[[notify.webhook]]\nurl = "{receiver.url}"\nsecret_file = "{secret}"\n'
        f'[[notify.syslog]]\naddress = "udp://127.0.0.1:{udp_port}"\n'
        f'[[notify.syslog]]\naddress = "{unix_path}"\n'
    )
    return make_harness(
        tmp_path / "node",
        overrides={
            "mfa_failures = 0": "mfa_failures = 2",
            "session_bytes_out = 0": 'session_bytes_out = "1MiB"',
            "file_bytes_out = 0": 'file_bytes_out = "1MiB"',
            '# [[notify.webhook]]\n# url = "https://hooks.example.com/bastion"': sinks,
        },
    )


def _scp_down(c: Contractor, h: BastionHarness, remote: Path, local: Path) -> None:
    cmd = [
        "scp", *c.ssh_args(), "-P", str(h.port),
        f"{c.login_name('web1')}@127.0.0.1:{remote}", str(local),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, env=c.ssh_env(), timeout=60)
    assert r.returncode == 0, r.stderr


def _alert_rows(h: BastionHarness, after: int) -> list[Any]:
    return [r for r in h.store.audit_after(after, limit=10_000) if is_alert(r.action)]


def _markers(h: BastionHarness, session_id: str) -> list[tuple[float, str]]:
    def sealed() -> Any:
        row = h.store.get_session(session_id)
        return row if row is not None and row.final_hash is not None else None

    row = wait_until(sealed, 15, f"session {session_id} sealed")
    with RecordingReader.open(str(h.config.recordings_dir / row.recording)) as reader:
        return [(e.time, e.label) for e in reader.events() if isinstance(e, Marker)]


class Drain(threading.Thread):
    """Reads a running ssh's stdout so the session's output keeps flowing."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.count = 0

    def run(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):  # what is there now, not a full buffer
            self.count += len(chunk)


async def _until(pilot: Pilot[None], check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def test_alerts_reach_every_sink_the_feed_the_recordings_and_the_console(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    udp: Datagrams,
    unix_log: tuple[str, Datagrams],
) -> None:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    unix_path, unix_rx = unix_log
    with http_receiver() as receiver:
        h = _node(tmp_path, receiver, udp.sock.getsockname()[1], unix_path)
        try:
            _drive(h, tmp_path, receiver, udp, unix_rx)
        finally:
            h.close()


def _drive(
    h: BastionHarness, tmp_path: Path, receiver: HttpReceiver, udp: Datagrams, unix_rx: Datagrams
) -> None:
    start = h.store.last_audit_id()
    feed = Feed(h.config, "--after", str(start))
    r = h.cli("policy", "add", "warn-hostname", "--command", "hostname", "--action", "warn")
    assert r.returncode == 0, r.stderr
    c = h.contractor()
    h.grant(c, "web1", options=("scp",))
    admin = h.contractor("adm", Role.ADMIN)

    # 1. wrong MFA codes (no session: an alert at login)
    wrong = c.wrong_code()
    for _ in range(2):
        assert c.ssh("true", target="web1", code=wrong, extra=ONE_PROMPT).returncode == 255
    h.wait_audit(c.name, "alert.mfa-failures")

    # the feed is killed as a crash would, and resumed after the last cursor it printed
    seen = feed.take(until=h.store.last_audit_id())
    seen += feed.kill()
    feed.stop()  # reaps it and closes its pipes
    feed = Feed(h.config, "--after", str(seen[-1]["cursor"]))
    try:
        # 2. a warn rule, 3. output past session_bytes_out, 4. a download past file_bytes_out
        warned = c.ssh("hostname", target="web1")
        assert warned.returncode == 0 and b"warning (rule warn-hostname)" in warned.stderr
        big = c.ssh("head -c 3000000 /dev/zero", target="web1", timeout=60)
        assert big.returncode == 0 and len(big.stdout) == 3_000_000
        remote = tmp_path / "export.bin"
        remote.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
        _scp_down(c, h, remote, tmp_path / "copy.bin")
        for action in ("policy.warn", "alert.session-bytes-out", "alert.file-bytes-out"):
            h.wait_audit(c.name, action)

        # 5. a session that stays live with two alerts (a warn rule and its output)
        errors = (tmp_path / "live.err").open("wb")
        live = c.ssh_stream(
            "web1", "head -c 1500000 /dev/zero; hostname; sleep 300", stderr=errors.fileno()
        )
        drain = Drain(live)
        drain.start()
        try:
            try:
                wait_until(lambda: drain.count >= 1_500_000, 30, "the live session's output")
            except AssertionError as e:
                err = (tmp_path / "live.err").read_bytes()
                raise AssertionError(f"{e}; got {drain.count} bytes, ssh said {err!r}") from e

            def live_alerts() -> list[Any]:
                rows = _alert_rows(h, start)
                return [r for r in rows if r.details.get("session") in _live_ids(h, c)]

            wait_until(lambda: len(live_alerts()) == 2, 15, "two alerts of the live session")
            (live_id,) = _live_ids(h, c)
            asyncio.run(_console(h, admin.name, start, live_id))
        finally:
            live.terminate()
            live.wait(30)
            drain.join(30)
            assert live.stdout is not None
            live.stdout.close()
            errors.close()
        wait_until(lambda: not _live_ids(h, c), 15, "the live session's end")

        # every row of the audit table after the start cursor came out once, in order
        h.wait_audit(c.name, "session.end")
        last = wait_until(lambda: _settled(h), 20, "the audit log to settle")
        assert last is not None
        seen += feed.take(until=last)
    finally:
        feed.stop()
    table = h.store.audit_after(start, limit=10_000)
    cursors = [row["cursor"] for row in seen]
    assert len(cursors) == len(set(cursors)), "a row was printed twice"
    assert cursors == [row.id for row in table], "the feed and the table differ"
    assert [row["hash"] for row in seen] == [row.hash for row in table]
    assert DRIVEN <= {row["action"] for row in seen}

    alerts = _alert_rows(h, start)
    assert DRIVEN <= {a.action for a in alerts}
    _check_markers(h, alerts)
    _check_webhook(receiver, tmp_path, alerts)
    for rx in (udp, unix_rx):
        _check_syslog(rx, alerts)


def _live_ids(h: BastionHarness, c: Contractor) -> list[str]:
    return [s.id for s in h.store.list_sessions(live=True, user=c.name)]


def _settled(h: BastionHarness) -> int | None:
    """The last audit id once it stayed the same for a moment (spawned rows are written)."""
    before = h.store.last_audit_id()
    time.sleep(0.3)
    after = h.store.last_audit_id()
    return after if after == before else None


def _check_markers(h: BastionHarness, alerts: list[Any]) -> None:
    """Each session alert is a marker in its recording, labelled by its name."""
    for a in alerts:
        sid = a.details.get("session")
        if sid is None:
            assert a.action == "alert.mfa-failures"  # raised at login, before any session
            continue
        family, _, name = a.action.partition(".")
        labels = [label for _t, label in _markers(h, sid)]
        assert any(label.startswith(f"{family} {name}") for label in labels), (a.action, labels)


def _check_webhook(receiver: HttpReceiver, tmp_path: Path, alerts: list[Any]) -> None:
    secret = (tmp_path / "webhook.secret").read_bytes().strip()

    def bodies() -> dict[str, dict[str, Any]]:
        got = {}
        for req in receiver.accepted():
            assert req.headers[SIGNATURE_HEADER.lower()] == sign(secret, req.body)
            body = json.loads(req.body)
            got[body["event"]] = body
        return got

    wait_until(lambda: DRIVEN <= set(bodies()), 20, f"{sorted(DRIVEN)} at the webhook")
    assert {a.action for a in alerts} <= set(bodies())
    assert bodies()["policy.warn"]["actor"] == alerts[-1].actor


def _check_syslog(rx: Datagrams, alerts: list[Any]) -> None:
    wait_until(lambda: DRIVEN <= set(rx.events()), 20, f"{sorted(DRIVEN)} at syslog")
    for event, fields in rx.events().items():
        if event.startswith(("alert.", "policy.")):
            assert int(fields["pri"]) == AUTHPRIV_WARNING
            assert fields["app"] == "bastion" and fields["hostname"] == "test-node"
            assert json.loads(fields["msg"])["event"] == event


async def _console(h: BastionHarness, admin: str, start: int, live_id: str) -> None:
    """The flag in the sessions list, the alerts view, and where Enter leads."""
    sock = h.control_socket()

    async def connect() -> SessionSource:
        return await ControlClient.connect(sock, user=admin)

    app = ConsoleApp(Start("browse"), connect, clock=ManualClock(), refresh_interval=None)
    async with app.run_test(size=(100, 32)) as pilot:
        await _until(pilot, lambda: isinstance(app.screen, BrowserScreen), "the browser")
        browser = app.screen
        sessions = browser.query_one("#sessions", DataTable)

        def flagged() -> bool:
            if live_id not in browser.sessions:  # type: ignore[attr-defined]
                return False
            return str(sessions.get_row(live_id)[7]) == "! 2 alerts"

        await _until(pilot, lambda: sessions.row_count > 0, "the sessions list")
        await _until(pilot, flagged, "the live session's flag")

        await pilot.press("a")
        await _until(pilot, lambda: isinstance(app.screen, AlertsScreen), "the alerts view")
        view = app.screen
        assert isinstance(view, AlertsScreen)
        table = view.query_one("#alerts", DataTable)
        expected = [a.id for a in reversed(await asyncio.to_thread(_alert_rows, h, start))]
        await _until(pilot, lambda: table.row_count >= len(expected), "the alerts")
        shown = [
            int(str(table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value))
            for i in range(table.row_count)
        ]
        assert shown[: len(expected)] == expected, "newest first, every alert"
        by_id = view.alerts

        # an alert of an ended session: the player, at that alert's marker
        ended = next(
            a for a in by_id.values() if a.action == "alert.session-bytes-out" and not a.live
        )
        assert ended.session is not None and ended.session != live_id
        table.move_cursor(row=table.get_row_index(str(ended.id)), animate=False)
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, PlayerScreen), "the player")
        player_screen = app.screen
        assert isinstance(player_screen, PlayerScreen)
        # the player indexes the recording in a thread: slow when the machine is loaded
        await _until(pilot, lambda: player_screen.indexed, "the recording's index", 120)
        marks = await asyncio.to_thread(_markers, h, ended.session)
        (at,) = [t for t, label in marks if label.startswith("alert session-bytes-out")]
        assert player_screen.player is not None
        assert player_screen.player.position == pytest.approx(at, abs=1e-6)
        await pilot.press("escape")
        await _until(pilot, lambda: app.screen is view, "back to the alerts")

        # an alert of the live session: the live view
        running = next(a for a in by_id.values() if a.session == live_id)
        assert running.live
        table.move_cursor(row=table.get_row_index(str(running.id)), animate=False)
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, LiveScreen), "the live view")
        live_screen = app.screen
        assert isinstance(live_screen, LiveScreen)
        assert live_screen.session.id == live_id
        await pilot.press("escape")
        await _until(pilot, lambda: app.screen is view, "back to the alerts")
