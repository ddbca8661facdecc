"""Reloading a running node (SIGHUP): live settings apply, the rest waits for a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.mfa import LockoutPolicy
from bastion.node_reload import plan_reload, reload_node
from bastion.session.reasons import EndReason
from tests.bastion.session.kit import Kit, build_kit

pytestmark = pytest.mark.timeout(60)

CHANGES = {
    "warn_before = [300, 60]": "warn_before = [600, 120, 30]",
    "poll_interval = 0.5": "poll_interval = 2",
    "idle_timeout = 900": "idle_timeout = 60",
    "max_failures = 5": "max_failures = 3",
    "failure_window = 600": "failure_window = 120",
    "lockout = 900": "lockout = 60",
    "stop_grace = 5": "stop_grace = 1",
    '# log_level = "INFO"': 'log_level = "DEBUG"',
    'listen = "127.0.0.1:0"': 'listen = "127.0.0.1:2299"',
    "repack_level = 9": "repack_level = 3",
    "address_max_failures = 20": "address_max_failures = 7",
    'penalties = "authfail:5 noauth:1': 'penalties = "authfail:9 noauth:1',
}
APPLIED = [
    "log_level",
    "login_limits.address_max_failures",
    "login_limits.penalties",
    "mfa.failure_window",
    "mfa.lockout",
    "mfa.max_failures",
    "ssh.idle_timeout",
    "stop_grace",
    "timebox.poll_interval",
    "timebox.warn_before",
]
NEEDS_RESTART = ["recording_repack_level", "ssh.listen_port"]


def _edit(path: Path, changes: dict[str, str]) -> None:
    text = path.read_text()
    for old, new in changes.items():
        assert old in text, f"config template has no line {old!r}"
        text = text.replace(old, new)
    path.write_text(text)


def test_plan_splits_live_settings_from_restart_ones(tmp_path: Path) -> None:
    old = load_config(build_kit(tmp_path / "node").config.path)
    assert plan_reload(old, old) == plan_reload(old, load_config(old.path))
    assert plan_reload(old, old).applied == [] and plan_reload(old, old).needs_restart == []
    new = dataclasses.replace(
        old,
        stop_grace=9.0,
        recordings_dir=tmp_path / "elsewhere",
        ssh=dataclasses.replace(old.ssh, idle_timeout=5.0, login_timeout=3.0),
        mfa=dataclasses.replace(old.mfa, lockout=1.0),
        timebox=dataclasses.replace(old.timebox, warn_before=(10.0,)),
    )
    plan = plan_reload(old, new)
    assert plan.applied == ["mfa.lockout", "ssh.idle_timeout", "stop_grace", "timebox.warn_before"]
    assert plan.needs_restart == ["recordings_dir", "ssh.login_timeout"]


async def test_reload_applies_live_settings_to_the_running_node(kit: Kit) -> None:
    node, before = kit.node, kit.node.config
    levels: list[str] = []
    _edit(before.path, CHANGES)
    result = await reload_node(node, before.path, levels.append)
    assert result is not None
    assert (result.applied, result.needs_restart) == (APPLIED, NEEDS_RESTART)
    assert node.live.warn_before == (600.0, 120.0, 30.0)
    assert (node.live.poll_interval, node.live.idle_timeout) == (2.0, 60.0)
    assert node.lockout == LockoutPolicy(max_failures=3, window=120.0, duration=60.0)
    assert node.config.login_limits.address_max_failures == 7
    assert node.penalties.policy.authfail == 9.0
    assert (node.config.stop_grace, node.config.log_level) == (1.0, "DEBUG")
    assert levels == ["DEBUG"]
    # what needs a restart stays as it was
    assert node.config.ssh.listen_port == before.ssh.listen_port
    assert node.config.recording_repack_level == before.recording_repack_level == 9
    await kit.settle()
    (audit,) = node.store.list_audit(action_prefix="node.reload")
    assert (audit.actor, audit.action, audit.subject) == ("node", "node.reload", "n1")
    assert audit.details["applied"] == APPLIED
    assert audit.details["needs_restart"] == NEEDS_RESTART


async def test_a_live_session_follows_the_reloaded_time_box(kit: Kit) -> None:
    s, adapter = await kit.live_session()
    _edit(kit.config.path, {"idle_timeout = 900": "idle_timeout = 60"})
    assert await reload_node(kit.node, kit.config.path) is not None
    assert s.live is not None
    kit.clock.now = s.live.last_input + 59
    kit.node.live.apply_one(s.live)
    assert adapter.closes == []
    kit.clock.now = s.live.last_input + 60
    kit.node.live.apply_one(s.live)
    assert adapter.closes == [(EndReason.IDLE_TIMEOUT, "no input for 60 seconds")]
    s.closed(EndReason.CLIENT_CLOSED)
    await s.finish()
    assert kit.row(s.id).end_reason == "idle-timeout"


@pytest.mark.parametrize(
    ("broken", "error"),
    [
        ({"[timebox]": "[timebox"}, "is not valid TOML"),
        ({"warn_before = [300, 60]": 'warn_before = "soon"'}, "timebox.warn_before must be"),
        # checked against asyncssh on reload too, as 'bastion serve' would at the restart
        (
            {'    "aes256-ctr",\n': '    "aes256-ctr",\n    "no-such",\n'},
            "'no-such' is not supported",
        ),
    ],
)
async def test_a_broken_file_changes_nothing_and_is_audited(
    kit: Kit, broken: dict[str, str], error: str
) -> None:
    node, before = kit.node, kit.node.config
    lockout, warn = node.lockout, node.live.warn_before
    levels: list[str] = []
    _edit(before.path, {**CHANGES, **broken})
    assert await reload_node(node, before.path, levels.append) is None
    assert node.config is before and node.lockout is lockout
    assert node.live.warn_before == warn == (300.0, 60.0)
    assert (node.live.poll_interval, node.live.idle_timeout) == (0.5, 900.0)
    assert levels == []
    await kit.settle()
    (audit,) = node.store.list_audit(action_prefix="node.reload")
    assert audit.action == "node.reload-refused" and audit.subject == "n1"
    assert error in audit.details["error"]
