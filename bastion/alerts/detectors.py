"""The alert detectors: session observers (volume, concurrent sessions, hours per target
label) and login checks.

Nothing here may slow a session or a login down: observers only compare numbers
already in memory, and every store read or write (history of source networks,
audit rows) runs in a task started with ``node.spawn``. Raising an alert never
refuses anything; refusing is the policy hooks' job.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from bastion import audit_actions as actions
from bastion.notify import Notification
from bastion.session.hooks import (
    FileDownloaded,
    RowsReturned,
    SessionEvent,
    SessionHook,
    SessionStarted,
    VolumeCrossed,
)
from bastion.session.lifecycle import Phase

if TYPE_CHECKING:
    from bastion.service import BastionNode
    from bastion.session.core import Session
    from bastion.store.models import User

log = logging.getLogger(__name__)

MFA_FAILURES = "mfa-failures"
NEW_SOURCE = "new-source"
SESSION_BYTES_OUT = "session-bytes-out"
STATEMENT_ROWS = "statement-rows"
FILE_BYTES_OUT = "file-bytes-out"
MAX_SESSIONS = "max-sessions"
OFF_HOURS = "off-hours"
DAY = 86400.0
_HISTORY_LIMIT = 10_000
_SQL_SHOWN = 200


def raise_alert(
    node: BastionNode,
    name: str,
    actor: str,
    subject: str | None,
    *,
    session: Session | None = None,
    **details: Any,
) -> None:
    """Audit ``alert.<name>``, mark the session's recording and notify the sinks (never blocks)."""
    action = actions.alert(name)
    if session is not None:
        details["session"] = session.id
        summary = " ".join(f"{k}={v}" for k, v in details.items() if k != "session")
        session.mark(f"alert {name}: {summary}")
    node.metrics.count(action)
    node.spawn(node.audit(actor, action, subject, **details))
    node.notifier.send(Notification(action, node.clock(), actor, subject, details))


def source_network(client_addr: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) of "HOST:PORT", or None when it is no IP address."""
    host = client_addr.rsplit(":", 1)[0] if ":" in client_addr else client_addr
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class AlertHook(SessionHook):
    """Volume per session, rows per statement, downloaded bytes per session, live
    sessions per user and hours per target label, from the session core's events."""

    name = "alerts"

    def __init__(self, node: BastionNode) -> None:
        self.node = node
        self.settings = node.config.alerts
        self._volume_alerted: set[str] = set()
        self._files_alerted: set[str] = set()

    def observe(self, session: Session, event: SessionEvent) -> None:
        if isinstance(event, RowsReturned):
            self._rows(session, event)
        elif isinstance(event, VolumeCrossed):
            self._volume(session, event)
        elif isinstance(event, FileDownloaded):
            self._files(session, event)
        elif isinstance(event, SessionStarted):
            self._concurrent(session)
            self._label_hours(session)

    def _rows(self, session: Session, event: RowsReturned) -> None:
        limit = self.settings.statement_rows
        if not limit or event.rows <= limit:
            return
        sql = event.sql or ""
        raise_alert(
            self.node, STATEMENT_ROWS, session.user.name, session.target.name,
            session=session, rows=event.rows, limit=limit,
            sql=sql if len(sql) <= _SQL_SHOWN else sql[:_SQL_SHOWN] + "…",
        )  # fmt: skip

    def _files(self, session: Session, event: FileDownloaded) -> None:
        limit = self.settings.file_bytes_out
        if not limit or event.total < limit or session.id in self._files_alerted:
            return
        self._files_alerted.add(session.id)
        raise_alert(
            self.node, FILE_BYTES_OUT, session.user.name, session.target.name,
            session=session, bytes_downloaded=event.total, limit=limit, last_path=event.path,
        )  # fmt: skip

    def _volume(self, session: Session, event: VolumeCrossed) -> None:
        limit = self.settings.session_bytes_out
        if not limit or event.bytes_out < limit or session.id in self._volume_alerted:
            return
        self._volume_alerted.add(session.id)
        raise_alert(
            self.node, SESSION_BYTES_OUT, session.user.name, session.target.name,
            session=session, bytes_out=event.bytes_out, limit=limit,
        )  # fmt: skip

    def _concurrent(self, session: Session) -> None:
        limit = self.settings.max_sessions
        if not limit:
            return
        live = [
            s
            for s in self.node.sessions.all()
            if s.user.id == session.user.id and s.phase is Phase.LIVE
        ]
        if len(live) > limit:
            raise_alert(
                self.node, MAX_SESSIONS, session.user.name, session.target.name,
                session=session, live=len(live), limit=limit,
                sessions=sorted(s.id for s in live),
            )  # fmt: skip

    def _label_hours(self, session: Session) -> None:
        """The login knew no target: a target label's window is checked as the session starts.

        A user exempted with ``[alerts.user_hours] NAME = ""`` is exempt here too.
        """
        settings = self.settings
        if not settings.label_hours or (session.user.name, None) in settings.user_hours:
            return
        at = self.node.clock()
        for label, hours in settings.label_windows_missed(at, session.target.labels):
            raise_alert(
                self.node, OFF_HOURS, session.user.name, session.target.name,
                session=session, label=label, hours=f"{hours[0]:%H:%M}-{hours[1]:%H:%M}",
                timezone=settings.timezone,
            )  # fmt: skip

    async def ended(self, session: Session) -> None:
        self._volume_alerted.discard(session.id)
        self._files_alerted.discard(session.id)


def mfa_failed(node: BastionNode, user: User, failures: int, client_addr: str) -> None:
    """A wrong MFA code was counted: alert when the count reaches ``mfa_failures``."""
    limit = node.config.alerts.mfa_failures
    if limit and failures == limit:
        raise_alert(
            node, MFA_FAILURES, user.name, user.name, failures=failures, limit=limit,
            window=node.lockout.window, client=client_addr,
        )  # fmt: skip


def login_ok(node: BastionNode, user: User, client_addr: str, at: float) -> None:
    """A login succeeded at ``at``: check hours now, the source network in the background."""
    settings = node.config.alerts
    if settings.outside_hours(at, user.name):
        hours = settings.hours_for(user.name)
        assert hours is not None  # noqa: S101  outside_hours is False without hours
        raise_alert(
            node, OFF_HOURS, user.name, user.name, client=client_addr,
            hours=f"{hours[0]:%H:%M}-{hours[1]:%H:%M}", timezone=settings.timezone,
        )  # fmt: skip
    if settings.new_source_days:
        node.spawn(_check_source(node, user, client_addr, at))


async def _check_source(node: BastionNode, user: User, client_addr: str, at: float) -> None:
    """Alert when no ``login.ok`` of ``user`` in the last N days came from this network."""
    network = source_network(client_addr)
    if network is None:
        return
    days = node.config.alerts.new_source_days
    rows = await node.call(
        node.store.list_audit,
        since=at - days * DAY,
        actor=user.name,
        action_prefix=actions.LOGIN_OK,
        limit=_HISTORY_LIMIT,
    )
    earlier = [r for r in rows if r.action == actions.LOGIN_OK and r.at < at]
    seen = {source_network(str(r.details.get("client", ""))) for r in earlier}
    if network not in seen:
        raise_alert(
            node, NEW_SOURCE, user.name, user.name, client=client_addr, network=network,
            days=days, known_networks=len(seen - {None}),
        )  # fmt: skip
