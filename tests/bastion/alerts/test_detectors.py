"""Each detector on a real node (SQLite, no sockets): threshold crossed and not crossed."""

from __future__ import annotations

import dataclasses

import pytest

from bastion.alerts import detectors
from bastion.alerts.settings import AlertsConfig, parse_alerts
from bastion.errors import ConfigError
from bastion.session.core import Session
from bastion.session.reasons import EndReason
from tests.bastion.session.kit import T0, Kit

MIB = 1 << 20


def arm(kit: Kit, **thresholds: object) -> None:
    """Set ``[alerts]`` on the kit's node and register the hook as start_background does."""
    kit.node.config = dataclasses.replace(kit.node.config, alerts=AlertsConfig(**thresholds))  # type: ignore[arg-type]
    kit.node.hooks.register(detectors.AlertHook(kit.node))


async def end(kit: Kit, s: Session) -> list[str]:
    s.closed(EndReason.EXIT)
    await s.finish()
    await kit.settle()
    return kit.markers(kit.row(s.id))


async def test_session_volume_alerts_once_with_a_marker(kit: Kit) -> None:
    arm(kit, session_bytes_out=3 * MIB)
    s, _ = await kit.live_session()
    s.output_seen(2 * MIB)
    await kit.settle()
    assert kit.audit("alert.session-bytes-out") == []
    s.output_seen(2 * MIB)  # 4 MiB: past the limit
    s.output_seen(5 * MIB)  # 9 MiB: another mark, no second alert
    markers = await end(kit, s)
    (row,) = kit.audit("alert.session-bytes-out", s.id)
    assert row.actor == "alice" and row.subject == "web1"
    assert row.details["bytes_out"] == 4 * MIB and row.details["limit"] == 3 * MIB
    assert [m for m in markers if m.startswith("alert session-bytes-out")] == [
        f"alert session-bytes-out: bytes_out={4 * MIB} limit={3 * MIB}"
    ]


async def test_session_volume_under_the_limit_is_quiet(kit: Kit) -> None:
    arm(kit, session_bytes_out=64 * MIB)
    s, _ = await kit.live_session()
    s.output_seen(40 * MIB)
    markers = await end(kit, s)
    assert kit.audit("alert.session-bytes-out") == []
    assert not [m for m in markers if m.startswith("alert")]


async def test_statement_rows_alert_for_each_statement_over_the_limit(kit: Kit) -> None:
    arm(kit, statement_rows=1000)
    s, _ = await kit.live_session()
    s.rows_returned("select * from small", 1000)  # at the limit: quiet
    s.rows_returned("select * from big", 5000)
    s.rows_returned("select * from bigger", 7000)
    markers = await end(kit, s)
    rows = kit.audit("alert.statement-rows", s.id)
    assert [(r.details["rows"], r.details["sql"]) for r in rows] == [
        (5000, "select * from big"),
        (7000, "select * from bigger"),
    ]
    assert rows[0].subject == "web1" and rows[0].details["limit"] == 1000
    assert [m for m in markers if m.startswith("alert statement-rows")] == [
        "alert statement-rows: rows=5000 limit=1000 sql=select * from big",
        "alert statement-rows: rows=7000 limit=1000 sql=select * from bigger",
    ]


async def test_file_bytes_out_alerts_once_per_session_on_the_sum(kit: Kit) -> None:
    arm(kit, file_bytes_out=3 * MIB)
    s, _ = await kit.live_session()
    s.file_downloaded("/etc/a", 2 * MIB)
    await kit.settle()
    assert kit.audit("alert.file-bytes-out") == []
    s.file_downloaded("/srv/b", 2 * MIB)  # 4 MiB in all: past the limit
    s.file_downloaded("/srv/c", 2 * MIB)  # no second alert
    markers = await end(kit, s)
    (row,) = kit.audit("alert.file-bytes-out", s.id)
    assert row.details["bytes_downloaded"] == 4 * MIB and row.details["last_path"] == "/srv/b"
    assert s.bytes_downloaded == 6 * MIB
    assert sum(m.startswith("alert file-bytes-out") for m in markers) == 1


async def test_rows_and_files_are_quiet_when_off(kit: Kit) -> None:
    arm(kit, session_bytes_out=MIB)
    s, _ = await kit.live_session()
    s.rows_returned("select 1", 10**9)
    s.file_downloaded("/x", 10**12)
    await end(kit, s)
    assert kit.audit("alert.statement-rows") == kit.audit("alert.file-bytes-out") == []


async def test_more_live_sessions_than_max_sessions(kit: Kit) -> None:
    arm(kit, max_sessions=1)
    first, _ = await kit.live_session()
    await kit.settle()
    assert kit.audit("alert.max-sessions") == []
    second, _ = await kit.live_session()
    await end(kit, first)
    markers = await end(kit, second)
    (row,) = kit.audit("alert.max-sessions")
    assert row.details["session"] == second.id
    assert row.details["live"] == 2 and row.details["limit"] == 1
    assert row.details["sessions"] == sorted([first.id, second.id])
    assert any(m.startswith("alert max-sessions") for m in markers)


async def test_sessions_one_after_another_stay_under_max_sessions(kit: Kit) -> None:
    arm(kit, max_sessions=1)
    for _ in range(2):
        s, _ = await kit.live_session()
        await end(kit, s)
    assert kit.audit("alert.max-sessions") == []


async def test_mfa_failures_alert_at_the_threshold_only(kit: Kit) -> None:
    arm(kit, mfa_failures=3)
    for failures in (1, 2):
        detectors.mfa_failed(kit.node, kit.user, failures, "192.0.2.7:50000")
    await kit.settle()
    assert kit.audit("alert.mfa-failures") == []
    detectors.mfa_failed(kit.node, kit.user, 3, "192.0.2.7:50000")
    detectors.mfa_failed(kit.node, kit.user, 4, "192.0.2.7:50000")
    await kit.settle()
    (row,) = kit.audit("alert.mfa-failures")
    assert row.subject == "alice" and row.details["failures"] == 3
    assert row.details["client"] == "192.0.2.7:50000"


async def test_mfa_failures_off_by_default(kit: Kit) -> None:
    arm(kit)
    detectors.mfa_failed(kit.node, kit.user, 5, "192.0.2.7:50000")
    await kit.settle()
    assert kit.audit("alert.mfa-failures") == []


def _past_login(kit: Kit, client: str, days_ago: float) -> None:
    kit.node.store.append_audit(
        "alice", "login.ok", None, {"client": client}, T0 - days_ago * detectors.DAY
    )


async def test_login_from_a_known_network_is_quiet(kit: Kit) -> None:
    arm(kit, new_source_days=30)
    _past_login(kit, "198.51.100.9:40000", days_ago=10)
    detectors.login_ok(kit.node, kit.user, "198.51.100.200:51000", T0)
    await kit.settle()
    assert kit.audit("alert.new-source") == []


async def test_login_from_a_new_network_alerts(kit: Kit) -> None:
    arm(kit, new_source_days=30)
    _past_login(kit, "198.51.100.9:40000", days_ago=10)
    _past_login(kit, "203.0.113.4:40000", days_ago=45)  # seen, but too long ago
    detectors.login_ok(kit.node, kit.user, "203.0.113.77:51000", T0)
    await kit.settle()
    (row,) = kit.audit("alert.new-source")
    assert row.details["network"] == "203.0.113.0/24"
    assert row.details["known_networks"] == 1


async def test_this_logins_own_row_does_not_count_as_history(kit: Kit) -> None:
    arm(kit, new_source_days=30)
    detectors.login_ok(kit.node, kit.user, "203.0.113.77:51000", T0)
    _past_login(kit, "203.0.113.77:51000", days_ago=0)  # the login.ok the server writes
    await kit.settle()
    assert len(kit.audit("alert.new-source")) == 1


async def test_logins_outside_hours(kit: Kit) -> None:
    # T0 is 2023-11-14 22:13:20 UTC
    arm(kit, hours=parse_alerts({"hours": "08:00-18:00"}).hours, timezone="UTC")
    detectors.login_ok(kit.node, kit.user, "192.0.2.7:1", T0)
    detectors.login_ok(kit.node, kit.user, "192.0.2.7:1", T0 - 10 * 3600)  # 12:13 UTC
    await kit.settle()
    (row,) = kit.audit("alert.off-hours")
    assert row.details["hours"] == "08:00-18:00"


async def test_a_users_own_hours_replace_the_common_ones(kit: Kit) -> None:
    # T0 is 2023-11-14 22:13:20 UTC
    cfg = parse_alerts({"hours": "08:00-18:00", "user_hours": {"alice": "20:00-23:00"}})
    arm(kit, hours=cfg.hours, user_hours=cfg.user_hours)
    detectors.login_ok(kit.node, kit.user, "192.0.2.7:1", T0)  # 22:13: inside her window
    await kit.settle()
    assert kit.audit("alert.off-hours") == []
    detectors.login_ok(kit.node, kit.user, "192.0.2.7:1", T0 - 10 * 3600)  # 12:13: outside
    await kit.settle()
    (row,) = kit.audit("alert.off-hours")
    assert row.details["hours"] == "20:00-23:00"
    exempt = parse_alerts({"hours": "08:00-18:00", "user_hours": {"bot": ""}})
    assert not exempt.outside_hours(T0, "bot") and exempt.outside_hours(T0, "carol")
    assert parse_alerts({"user_hours": {"x": "01:00-02:00"}}).any
    assert not parse_alerts({"user_hours": {"x": ""}}).any


async def test_sessions_on_a_labelled_target_outside_its_window(kit: Kit) -> None:
    # T0 is 2023-11-14 22:13:20 UTC; the login check knows no target, the session start does
    cfg = parse_alerts(
        {"label_hours": {"env=prod": "08:00-18:00", "tier=db": "20:00-23:00"},
         "user_hours": {"oncall": ""}}
    )  # fmt: skip
    arm(kit, label_hours=cfg.label_hours, user_hours=cfg.user_hours)
    s, _ = await kit.live_session()  # web1 has no labels yet
    await end(kit, s)
    assert kit.audit("alert.off-hours") == []
    kit.node.store.set_target_labels("web1", {"env": "prod", "tier": "db"})
    s, _ = await kit.live_session()
    markers = await end(kit, s)
    (row,) = kit.audit("alert.off-hours", s.id)  # tier=db's window holds 22:13
    assert (row.actor, row.subject) == ("alice", "web1")
    assert (row.details["label"], row.details["hours"]) == ("env=prod", "08:00-18:00")
    assert "alert off-hours: label=env=prod hours=08:00-18:00 timezone=UTC" in markers
    kit.node.store.set_target_labels("web1", {"env": "dev"}, remove=["tier"])
    kit.clock.now = T0 + 3000  # 23:03: outside tier=db's window, but web1 is no longer db
    s, _ = await kit.live_session()
    await end(kit, s)
    assert kit.audit("alert.off-hours", s.id) == []
    assert cfg.any and cfg.label_windows_missed(T0, {"env": "prod"})
    assert not cfg.label_windows_missed(T0 - 10 * 3600, {"env": "prod"})  # 12:13


async def test_a_user_exempt_from_hours_is_exempt_from_label_windows(kit: Kit) -> None:
    cfg = parse_alerts({"label_hours": {"env=prod": "08:00-18:00"}, "user_hours": {"alice": ""}})
    arm(kit, label_hours=cfg.label_hours, user_hours=cfg.user_hours)
    kit.node.store.set_target_labels("web1", {"env": "prod"})
    s, _ = await kit.live_session()  # 22:13, outside env=prod's window
    await end(kit, s)
    assert kit.audit("alert.off-hours") == []


def test_source_networks() -> None:
    assert detectors.source_network("192.0.2.7:50000") == "192.0.2.0/24"
    assert detectors.source_network("2001:db8:1:2:3::9:443") == "2001:db8:1:2::/64"
    assert detectors.source_network("::ffff:192.0.2.7:22") == "192.0.2.0/24"
    assert detectors.source_network("?") is None


def test_alerts_settings() -> None:
    cfg = parse_alerts(
        {
            "mfa_failures": 3,
            "session_bytes_out": "100MiB",
            "hours": "22:00-06:00",
            "timezone": "Europe/Berlin",
        }
    )
    assert cfg.session_bytes_out == 100 * MIB and cfg.any
    assert parse_alerts({"session_bytes_out": "2G"}).session_bytes_out == 2 << 30
    both = parse_alerts({"statement_rows": 10_000, "file_bytes_out": "50MiB"})
    assert both.statement_rows == 10_000 and both.file_bytes_out == 50 * MIB and both.any
    assert not parse_alerts({}).any
    assert cfg.outside_hours(T0 - 10 * 3600)  # 13:13 in Berlin
    assert not cfg.outside_hours(T0)  # 23:13 in Berlin
    for bad, match in (
        ({"mfa_failures": -1}, "mfa_failures"),
        ({"session_bytes_out": "lots"}, "session_bytes_out"),
        ({"statement_rows": "many"}, "statement_rows"),
        ({"file_bytes_out": "big"}, "file_bytes_out"),
        ({"hours": "9-5pm"}, "hours"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"mfa_failure": 3}, "unknown key"),
        ({"user_hours": {"alice": "late"}}, "user_hours.alice"),
        ({"user_hours": "alice=9-5"}, "must be a table"),
        ({"label_hours": {"env": "08:00-18:00"}}, "write KEY=VALUE"),
        ({"label_hours": {"env=prod": ""}}, "needs a window"),
        ({"label_hours": {"env=prod": "9-5"}}, 'label_hours."env=prod"'),
        ({"label_hours": "env=prod"}, "must be a table"),
    ):
        with pytest.raises(ConfigError, match=match):
            parse_alerts(bad)
