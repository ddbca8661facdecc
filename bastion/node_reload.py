"""Reloading a running node's configuration (SIGHUP) without dropping a session.

Only what can change safely while sessions run is applied: the time box
(warnings, poll interval, idle timeout), the MFA limits, the stop grace period
and the log level. Anything else that differs (listeners, keys, state store,
recording storage) is reported as needing a restart and left as it is. A file
that does not load changes nothing at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bastion import audit_actions as actions
from bastion.config import Config, load_config
from bastion.errors import ConfigError
from bastion.mfa import LockoutPolicy
from bastion.ssh.algorithms import check_ssh_algorithms

if TYPE_CHECKING:
    from bastion.service import BastionNode

log = logging.getLogger(__name__)

_LIVE_SECTIONS = ("timebox", "mfa", "policy", "login_limits")
_LIVE_NODE_KEYS = ("stop_grace", "log_level")
_LIVE_SSH_KEYS = ("idle_timeout",)


@dataclasses.dataclass(frozen=True)
class ReloadResult:
    """What a reload changed, and what it could not change without a restart."""

    applied: list[str]
    needs_restart: list[str]


def _flatten(config: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for g in dataclasses.fields(value):
                out[f"{f.name}.{g.name}"] = getattr(value, g.name)
        else:
            out[f.name] = value
    return out


def _live(key: str) -> bool:
    section, _, name = key.partition(".")
    if not name:
        return key in _LIVE_NODE_KEYS
    return section in _LIVE_SECTIONS or (section == "ssh" and name in _LIVE_SSH_KEYS)


def plan_reload(old: Config, new: Config) -> ReloadResult:
    """Which settings differ, split into those applied live and those needing a restart."""
    before, after = _flatten(old), _flatten(new)
    changed = sorted(k for k in after if before.get(k) != after[k])
    return ReloadResult(
        applied=[k for k in changed if _live(k)],
        needs_restart=[k for k in changed if not _live(k)],
    )


def merged_config(old: Config, new: Config) -> Config:
    """``old`` with the live-changeable settings of ``new``."""
    return dataclasses.replace(
        old,
        timebox=new.timebox,
        mfa=new.mfa,
        policy=new.policy,
        login_limits=new.login_limits,
        stop_grace=new.stop_grace,
        log_level=new.log_level,
        ssh=dataclasses.replace(old.ssh, idle_timeout=new.ssh.idle_timeout),
    )


def apply_config(node: BastionNode, config: Config) -> None:
    """Make the running parts of ``node`` follow ``config``'s live settings."""
    node.config = config
    node.live.warn_before = tuple(sorted(config.timebox.warn_before, reverse=True))
    node.live.poll_interval = config.timebox.poll_interval
    node.live.idle_timeout = config.ssh.idle_timeout
    node.policy.invalidate()  # re-check the stored rules at the next decision
    node.lockout = LockoutPolicy(
        max_failures=config.mfa.max_failures,
        window=config.mfa.failure_window,
        duration=config.mfa.lockout,
    )
    # per-address limits are read at each login; penalties keep what sources accrued
    node.penalties.policy = config.login_limits.penalties
    node.penalties.exempt = config.login_limits.penalty_exempt


def _load_checked(path: Path) -> Config:
    """The file as ``bastion serve`` would accept it (the SSH algorithm names included)."""
    config = load_config(path)
    check_ssh_algorithms(config.ssh)
    return config


async def reload_node(
    node: BastionNode,
    path: Path,
    set_log_level: Callable[[str], None] | None = None,
) -> ReloadResult | None:
    """Re-read ``path`` and apply what can change live; None when the file is refused.

    Every outcome is logged and audited (``node.reload`` or ``node.reload-refused``).
    """
    try:
        new = await node.call(_load_checked, path)
    except ConfigError as e:
        log.error("reload refused, nothing changed: %s", e)
        await node.audit("node", actions.NODE_RELOAD_REFUSED, node.node, error=str(e))
        return None
    if node.config.worker:  # compare like with like: the file as this worker runs it
        from bastion.workers import worker_config

        new = worker_config(new, node.config.worker)
    result = plan_reload(node.config, new)
    apply_config(node, merged_config(node.config, new))
    if new.log_level is not None and set_log_level is not None:
        set_log_level(new.log_level)
    log.warning(
        "reloaded %s: applied %s%s",
        path,
        ", ".join(result.applied) or "nothing (no live setting changed)",
        f"; needs a restart, not applied: {', '.join(result.needs_restart)}"
        if result.needs_restart
        else "",
    )
    await node.audit(
        "node",
        actions.NODE_RELOAD,
        node.node,
        applied=result.applied,
        needs_restart=result.needs_restart,
    )
    return result
