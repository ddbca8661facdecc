"""Login-name syntax, the menu line editor, durations, config, time box (pure)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bastion.config import KNOWN_KEYS, load_config, render_config
from bastion.errors import ConfigError
from bastion.session.timebox import LiveSession, LiveSessions
from bastion.ssh.login_name import LoginName, LoginNameError, parse_login_name
from bastion.ssh.menu import LineInput, choose
from bastion.store.models import GrantState
from bastion.timeparse import parse_duration, parse_time
from tests.bastion.test_grants import grant


def test_login_names() -> None:
    assert parse_login_name("alice") == LoginName("alice")
    assert parse_login_name("alice%web1") == LoginName("alice", "web1")
    assert parse_login_name("alice%web1%root") == LoginName("alice", "web1", "root")
    for bad in ("alice%", "%web1", "a%b%c%d", "al ice", "alice%we/b", "x" * 65, ""):
        with pytest.raises(LoginNameError):
            parse_login_name(bad)


def test_line_input_echo_backspace_enter() -> None:
    line = LineInput()
    assert line.feed(b"wx") == b"wx"
    assert line.feed(b"\x7f") == b"\x08 \x08"
    assert line.feed(b"eb1\r") == b"eb1\r\n"
    assert line.done and not line.cancelled and line.buffer == "web1"
    ctrl_c = LineInput()
    ctrl_c.feed(b"ab\x03")
    assert ctrl_c.cancelled


def test_menu_choice() -> None:
    grants = [grant(1), grant(2)]
    assert choose(grants, "2") is grants[1]
    assert choose(grants, "web1") is grants[0]
    assert choose(grants, "3") is None
    assert choose(grants, "0") is None


def test_durations_and_times() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("", "5", "h", "-1h", "1x", "1h junk"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_time("+2h", 1000.0) == 1000.0 + 7200
    assert parse_time("1970-01-01T01:00", 0) == 3600
    assert parse_time("1970-01-01T01:00+01:00", 0) == 0
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("tomorrow", 0)


def test_config_template_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(render_config("n1", "127.0.0.1:2299"))
    cfg = load_config(path)
    assert cfg.node == "n1"
    assert (cfg.ssh.listen_host, cfg.ssh.listen_port) == ("127.0.0.1", 2299)
    assert cfg.state_url == f"sqlite:///{tmp_path / 'state.db'}"
    assert cfg.timebox.warn_before == (300.0, 60.0)
    assert cfg.ssh.certificate_lifetime == 120
    assert cfg.stop_grace == 5.0


def test_config_template_names_every_known_key() -> None:
    """The template documents every key the loader reads (control.listen as a comment)."""
    data = tomllib.loads(render_config("n1", "127.0.0.1:2299"))
    shown = {(section, key) for section, table in data.items() for key in table}
    known = {(section, key) for section, keys in KNOWN_KEYS.items() for key in keys}
    # commented out in the template: control.listen (no TCP by default), node.log_level,
    # the notification sinks (none by default; tests/bastion/notify checks their example),
    # the per-user and per-label hours tables (empty by default), [recording.s3], and
    # login_timeout, the older name of login_grace (still read)
    assert known - shown == {
        ("ssh", "login_timeout"),
        ("postgres", "login_timeout"),
        ("alerts", "user_hours"),
        ("alerts", "label_hours"),
        ("control", "listen"),
        ("node", "log_level"),
        ("recording", "s3"),
        ("notify", "webhook"),
        ("notify", "syslog"),
        ("requests", "auto_approve"),
    }
    assert shown <= known


def test_config_unknown_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(render_config("n1", "127.0.0.1:2299").replace("idle_timeout", "idle_timout"))
    with pytest.raises(
        ConfigError, match=r"unknown key \[ssh\] idle_timout; did you mean 'idle_timeout'"
    ):
        load_config(path)
    path.write_text("[node]\nstop_grace = 2\n[postgres]\nrequire_tsl = false\n")
    with pytest.raises(ConfigError, match=r"\[postgres\] require_tsl; did you mean 'require_tls'"):
        load_config(path)
    path.write_text('[sssh]\nlisten = "127.0.0.1:2299"\n')
    with pytest.raises(ConfigError, match=r"unknown section \[sssh\]; did you mean 'ssh'"):
        load_config(path)
    path.write_text("[ssh.upstream]\nciphers = []\n")  # a nested table is a key of [ssh]
    with pytest.raises(ConfigError, match=r"unknown key \[ssh\] upstream"):
        load_config(path)
    path.write_text("[[timebox]]\npoll_interval = 1\n")  # an array of tables is not a table
    with pytest.raises(ConfigError, match=r"\[timebox\] must be a table"):
        load_config(path)
    path.write_text("[mfa]\nzzz = 1\n")  # nothing close: no suggestion
    with pytest.raises(ConfigError, match=r"unknown key \[mfa\] zzz$"):
        load_config(path)
    path.write_text("[node]\nstop_grace = 2.5\n")
    assert load_config(path).stop_grace == 2.5


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('[ssh]\nlisten = "nope"\n')
    with pytest.raises(ConfigError, match="ssh.listen"):
        load_config(path)
    path.write_text("[mfa]\nmax_failures = -3\n")
    with pytest.raises(ConfigError, match="mfa.max_failures"):
        load_config(path)
    with pytest.raises(ConfigError, match="bastion init"):
        load_config(tmp_path / "missing.toml")


class FakeHandle:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.ended: list[tuple[str, str]] = []

    def notify(self, message: str) -> None:
        self.notes.append(message)

    def terminate(self, reason: str, message: str) -> None:
        self.ended.append((reason, message))


def _live(clock: list[float], not_after: float) -> tuple[LiveSessions, LiveSession, FakeHandle]:
    live = LiveSessions(warn_before=(300, 60), idle_timeout=900, clock=lambda: clock[0])
    h = FakeHandle()
    s = LiveSession("s1", "alice", "web1", 7, not_after, h, clock[0], clock[0])
    live.add(s)
    return live, s, h


def test_timebox_warns_then_ends() -> None:
    clock = [1000.0]
    live, s, h = _live(clock, 1000 + 400)
    active = {7: (GrantState.ACTIVE, 1400.0)}
    live.apply(active)
    assert h.notes == [] and h.ended == []
    clock[0] = 1101
    s.touch(clock[0])
    live.apply(active)
    assert len(h.notes) == 1 and "ends in 5 minute" in h.notes[0]
    live.apply(active)
    assert len(h.notes) == 1  # once per threshold
    clock[0] = 1345
    s.touch(clock[0])
    live.apply(active)
    assert len(h.notes) == 2 and "ends in 1 minute" in h.notes[1]
    clock[0] = 1400
    live.apply(active)
    assert h.ended and h.ended[0][0] == "grant-ended"


def test_timebox_late_start_warns_once_for_the_nearest_threshold() -> None:
    clock = [1000.0]
    live, s, h = _live(clock, 1030)
    live.apply_one(s)
    assert len(h.notes) == 1
    live.apply_one(s)
    assert len(h.notes) == 1


def test_timebox_warns_again_before_an_extended_end() -> None:
    clock = [1000.0]
    live, s, h = _live(clock, 1000 + 50)
    live.apply({7: (GrantState.ACTIVE, 1050.0)})
    assert len(h.notes) == 1  # both thresholds passed: one warning
    live.apply({7: (GrantState.ACTIVE, 1050.0 + 3600)})  # an approved extension
    assert s.warned == set() and len(h.notes) == 1 and not h.ended
    clock[0] = 1050 + 3600 - 200
    s.touch(clock[0])
    live.apply({7: (GrantState.ACTIVE, 1050.0 + 3600)})
    assert len(h.notes) == 2 and "ends in 3 minute" in h.notes[1]


def test_timebox_revocation_extension_and_idle() -> None:
    clock = [1000.0]
    live, s, h = _live(clock, 5000)
    live.apply({7: (GrantState.REVOKED, 5000.0)})
    assert h.ended == [("grant-revoked", "grant #7 was revoked")]
    live2, s2, h2 = _live(clock, 1100)
    live2.apply({7: (GrantState.ACTIVE, 9000.0)})  # extended by an admin
    assert s2.not_after == 9000.0 and not h2.ended
    clock[0] = 1000 + 901
    live2.apply({7: (GrantState.ACTIVE, 9000.0)})
    assert h2.ended and h2.ended[0][0] == "idle-timeout"
    live3, _s3, h3 = _live([1000.0], 5000)
    live3.apply({})
    assert h3.ended and h3.ended[0][0] == "grant-removed"


def test_json_log_lines() -> None:
    import json
    import logging

    from bastion.cli_node import JsonLogFormatter

    record = logging.LogRecord("bastion", logging.WARNING, "f", 1, "lost %s", ("web1",), None)
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["level"] == "WARNING" and entry["message"] == "lost web1"
    assert entry["logger"] == "bastion"


def test_timebox_ignores_sessions_started_during_the_read() -> None:
    # A session added while the grant states were read must not be judged by them.
    clock = [1000.0]
    live, s, h = _live(clock, 5000)
    snapshot = live.list()
    h2 = FakeHandle()
    late = LiveSession("s2", "bob", "web2", 8, 5000, h2, clock[0], clock[0])
    live.add(late)
    live.apply({7: (GrantState.ACTIVE, 5000.0)}, snapshot)
    assert not h.ended and not h2.ended
    live.apply({7: (GrantState.ACTIVE, 5000.0)})  # without the snapshot: ended wrongly
    assert h2.ended and h2.ended[0][0] == "grant-removed"


def test_an_event_the_format_cannot_hold_ends_the_recording(tmp_path: Path) -> None:
    """Fail closed: a payload the recorder refuses (here NaN, not JSON) fails the
    recording and tells the session, instead of escaping into the relay."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bastion.pg.query_event import QUERY_EVENT
    from bastion.recording import LiveRecording
    from recorder.storage import LocalStorage
    from recorder.writer import RecordingWriter

    storage = LocalStorage(tmp_path)
    writer = RecordingWriter.create(storage, "s-nan", {}, Ed25519PrivateKey.generate(), "k1")
    failures: list[str] = []
    rec = LiveRecording(writer, failures.append)
    rec.event(QUERY_EVENT, {"seq": 1})
    rec.event(QUERY_EVENT, {"duration_ms": float("nan")})
    assert rec.failed is not None and failures == [rec.failed]
    assert "could not be recorded" in rec.failed
    rec.event(QUERY_EVENT, {"seq": 3})  # nothing more is written once failed
    assert failures == [rec.failed]
