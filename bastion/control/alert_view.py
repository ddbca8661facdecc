"""Alerts as the control API shows them: the ``alert.*`` and ``policy.*`` audit rows.

Why from the audit log and not from the nodes' memory: every node writes its alerts
there (a session on another node included), it survives restarts, and it is what a
SIEM reads through ``bastion audit --follow``, so the console and the SIEM never
disagree. Rule changes (``policy.rule-*``) are admin actions, not alerts.

Blocking like the store: the server runs these through ``BastionNode.call``.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion import audit_actions as actions
from bastion.control.messages import AlertInfo
from bastion.store import Store
from bastion.store.models import AuditEvent

__all__ = ["alert_counts", "alert_info", "list_alerts"]

_NOT_ALERTS = ("policy.rule-",)
_HIDDEN = frozenset({"session", "node"})


def is_alert(action: str) -> bool:
    """``alert.*`` and the ``policy.*`` decisions (not rule changes)."""
    return action.startswith((actions.ALERT_PREFIX, actions.POLICY_PREFIX)) and not (
        action.startswith(_NOT_ALERTS)
    )


def _what(e: AuditEvent) -> str:
    d = e.details
    if e.action.startswith(actions.POLICY_PREFIX):
        rule = f"rule {d['rule']}: " if d.get("rule") else ""
        reason = f" ({d['reason']})" if d.get("reason") else ""
        return f"{rule}{d.get('kind', '?')} {d.get('text', '')!r}{reason}"
    return " ".join(f"{k}={v}" for k, v in d.items() if k not in _HIDDEN and v is not None)


def _marker(action: str) -> str:
    family, _, name = action.partition(".")
    return f"{family} {name}"


def alert_info(e: AuditEvent, started: dict[str, float], live: set[str]) -> AlertInfo:
    """One row; ``started``/``live``: the sessions' start times and which are live."""
    sid = e.details.get("session")
    session = sid if isinstance(sid, str) else None
    start = started.get(session) if session is not None else None
    return AlertInfo(
        id=e.id,
        at=e.at,
        action=e.action,
        user=e.actor,
        target=e.subject,
        what=_what(e),
        session=session,
        offset=max(0.0, e.at - start) if start is not None else None,
        live=session in live,
        marker=_marker(e.action) if session is not None else None,
    )


def _rows(store: Store, since: float | None, limit: int) -> list[AuditEvent]:
    found: list[AuditEvent] = []
    for prefix in (actions.ALERT_PREFIX, actions.POLICY_PREFIX):
        found += store.list_audit(since=since, action_prefix=prefix, limit=limit)
    return sorted((e for e in found if is_alert(e.action)), key=lambda e: -e.id)


def list_alerts(store: Store, *, since: float | None = None, limit: int = 200) -> list[AlertInfo]:
    """The ``limit`` newest alerts and policy decisions, newest first."""
    rows = _rows(store, since, limit)[:limit]
    started: dict[str, float] = {}
    live: set[str] = set()
    for sid in {str(e.details["session"]) for e in rows if e.details.get("session")}:
        s = store.get_session(sid)
        if s is not None:
            started[sid] = s.started_at
            if s.ended_at is None:
                live.add(sid)
    return [alert_info(e, started, live) for e in rows]


def alert_counts(store: Store, sessions: Iterable[tuple[str, float]]) -> dict[str, int]:
    """How many alerts name each of ``sessions`` (id, start): the live list's flag.

    Two indexed reads from the oldest start on, bounded: a session with more
    alerts than the bound shows the bound.
    """
    wanted = dict(sessions)
    if not wanted:
        return {}
    counts: dict[str, int] = {}
    for e in _rows(store, min(wanted.values()), 5000):
        sid = e.details.get("session")
        if isinstance(sid, str) and sid in wanted:
            counts[sid] = counts.get(sid, 0) + 1
    return counts
