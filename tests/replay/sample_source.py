"""Fixed sample data for the console tests: a ``SessionSource`` over committed recordings.

Like posting's snapshot app: the screens run unchanged, fed by sessions whose times,
names and recordings never change, so Pilot assertions and SVG snapshots are stable.
Search answers from the recordings themselves (typed commands, SQL), the way the
node's index does. A live session plays a scripted list of events and then waits
for more (``push``); ``terminate``/``lock_user`` are recorded and end the watch, as
the node would. Access requests are decided the way the node would for the few rules
a screen must show (self-approval refused, never longer than asked). The real node
is exercised by ``test_app_live_node.py`` and ``test_app_requests.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from recorder import RecordingReader, Structured, extract_commands
from recorder.events import Output, Resize
from replay.screen_lines import DisplayedLines
from replay.source import (
    AlertInfo,
    ApprovalInfo,
    GrantWhy,
    HistoryEntry,
    LiveEnd,
    LiveEvent,
    Operator,
    RequestInfo,
    SearchHit,
    SessionInfo,
    SourceError,
    TargetAccess,
    UserAccess,
    Way,
)

RECORDINGS = Path(__file__).resolve().parent / "fixtures" / "recordings"
NOW = 1_746_100_800.0  # 2025-05-01 12:00Z: the frozen "now" of the browser
START = 1_746_093_600.0  # 2025-05-01 10:00Z


def _session(
    sid: str,
    user: str,
    target: str,
    protocol: str,
    start: float,
    length: float | None,
    **kw: object,
) -> SessionInfo:
    fields: dict[str, object] = {
        "id": sid,
        "user": user,
        "target": target,
        "protocol": protocol,
        "login": "deploy" if protocol == "ssh" else None,
        "client_addr": "192.0.2.10",
        "node": "node-a",
        "started_at": start,
        "ended_at": None if length is None else start + length,
        "end_reason": None if length is None else "client-closed",
        "bytes_in": 120,
        "bytes_out": 2600,
        "events": 40,
        "live": length is None,
    }
    fields.update(kw)
    return SessionInfo(**fields)  # type: ignore[arg-type]


SESSIONS = [
    _session("s-live", "carol", "web2", "ssh", NOW - 600, None, bytes_out=1_500_000),
    _session("s-pg", "bob", "db1", "postgres", START + 1800, 44, events=7),
    _session("s-htop", "alice", "web1", "ssh", START + 1200, 62),
    _session("s-ls", "dave", "web2", "ssh", START + 600, 62, end_reason="admin-terminated"),
    _session("s-vim", "alice", "web1", "ssh", START, 76),
]


def _request(
    rid: int, who: str, targets: str, duration: float, reason: str, state: str, created: float,
    **kw: object,
) -> RequestInfo:  # fmt: skip
    fields: dict[str, object] = {
        "id": rid,
        "kind": "access",
        "requester": who,
        "targets": tuple(targets.split(",")),
        "login": None,
        "options": (),
        "duration": duration,
        "start_at": None,
        "reason": reason,
        "state": state,
        "created_at": created,
        "lapses_at": created + 3600,
        "extends_grant": None,
        "decided_at": None,
        "decided_by": None,
        "decision_reason": None,
        "approvals": (),
        "grants": (),
        "needed": 1 if state == "pending" else 0,
        "approvers": ("bob", "eve") if state == "pending" else (),
        "history": (HistoryEntry(created, who, f"asked for {targets}: {reason}"),),
    }
    fields.update(kw)
    return RequestInfo(**fields)  # type: ignore[arg-type]


_BOB_OK = ApprovalInfo("bob", NOW - 300, None, None, "fine by me")
REQUESTS = [
    _request(12, "alice", "web1", 7200, "INC-4711 restart nginx after the cert renewal",
             "pending", NOW - 900),
    _request(11, "carol", "db1", 1800, "JIRA-88 check the failed invoices", "pending",
             NOW - 1200, login="readonly", approvals=(_BOB_OK,), approvers=("eve",),
             history=(HistoryEntry(NOW - 1200, "carol", "asked for db1 as readonly for 30m"),
                      HistoryEntry(_BOB_OK.at, "bob", "approved: fine by me"))),
    _request(10, "dave", "web2", 3600, "deploy 2025.05", "approved", START,
             decided_at=START + 60, decided_by="eve", grants=(7,)),
    _request(9, "alice", "db1", 8 * 3600, "debug", "denied", START - 600,
             decided_at=START - 300, decided_by="bob", decision_reason="too long; ask for 1h"),
]  # fmt: skip


def _grant(gid: int, login: str, start: float, end: float, state: str, **kw: object) -> GrantWhy:
    fields: dict[str, object] = {
        "id": gid, "profile": None, "selector": None, "request": None, "request_kind": None,
        "login": login, "credset": None, "options": (), "not_before": start, "not_after": end,
        "state": state, "why_not": "", "reason": "INC-4711", "approved_by": "bob",
    }  # fmt: skip
    fields.update(kw)
    return GrantWhy(**fields)  # type: ignore[arg-type]


_STARTS = "grant #8 starts at 2025-05-02 09:00:00 UTC"
ACCESS = {
    "alice": UserAccess(
        user="alice", role="contractor", state="active", sponsor="bob",
        engagement_until=NOW + 20 * 86400, login_refused=None, at=NOW, pending_requests=(12,),
        targets=(
            TargetAccess(
                target="web1", kind="ssh", removed=False, labels={"env": "prod"},
                reachable=True, ways=(Way("deploy", 5, NOW + 3600),), blocked=(),
                grants=(_grant(5, "deploy", NOW - 600, NOW + 3600, "usable", request=4,
                               request_kind="access"),),
            ),
            TargetAccess(
                target="web2", kind="ssh", removed=False, labels={"env": "staging"},
                reachable=False, ways=(), blocked=(_STARTS,),
                grants=(_grant(8, "deploy", NOW + 75600, NOW + 90000, "not-started",
                               profile="staging-web", selector="env=staging",
                               why_not=_STARTS),),
            ),
        ),
    ),
}  # fmt: skip
"""What the sample node answers to ``user_access`` (others are unknown users)."""


class SampleSource:
    """See the module docstring."""

    def __init__(
        self,
        role: str = "admin",
        sessions: list[SessionInfo] | None = None,
        feeds: dict[str, list[LiveEvent]] | None = None,
        requests: list[RequestInfo] | None = None,
    ) -> None:
        self.operator = Operator("eve", role)
        self.sessions = list(SESSIONS if sessions is None else sessions)
        self.requests = list(REQUESTS if requests is None else requests)
        self.alerts: list[AlertInfo] = []
        self.feeds = feeds or {}
        self.queues: dict[str, asyncio.Queue[LiveEvent]] = {}
        self.calls: list[tuple[str, ...]] = []
        self.closed = False

    async def whoami(self) -> Operator:
        return self.operator

    async def list_sessions(
        self,
        *,
        live: bool | None = None,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 500,
    ) -> list[SessionInfo]:
        self.calls.append(("list_sessions", str(live), str(user), str(target), str(since)))
        out = [
            s
            for s in self.sessions
            if (live is None or s.live == live)
            and (user is None or s.user == user)
            and (target is None or s.target == target)
            and (since is None or s.started_at >= since)
            and (until is None or s.started_at < until)
        ]
        return out[:limit]

    async def search(
        self,
        text: str,
        *,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[SearchHit]:
        self.calls.append(("search", text))
        hits = []
        for s in await self.list_sessions(user=user, target=target, since=since):
            path = RECORDINGS / f"{s.id}.bastrec"
            if not path.exists():
                continue
            with RecordingReader.open(path) as reader:
                events = list(reader.events())
            found = extract_commands(events) + [
                (e.time, str(e.payload.get("sql")))
                for e in events
                if isinstance(e, Structured) and isinstance(e.payload, dict)
            ]
            for offset, line in found:
                if text.lower() in line.lower():
                    hits.append(
                        SearchHit(s.id, s.started_at + offset, offset, line, s.user, s.target)
                    )
            shown = DisplayedLines(80, 24)  # what the node's index holds as "output"
            for e in events:
                if isinstance(e, Output):
                    shown.feed(e.time, e.data)
                elif isinstance(e, Resize):
                    shown.resize(e.time, e.cols, e.rows)
            for line, offset in sorted(shown.finish().items(), key=lambda item: item[1]):
                if text.lower() in line.lower():
                    hits.append(
                        SearchHit(
                            s.id, s.started_at + offset, offset, line, s.user, s.target, "output"
                        )
                    )
        return hits[:limit]

    async def recording_path(self, session_id: str) -> str:
        path = RECORDINGS / f"{session_id}.bastrec"
        if not path.exists():
            raise SourceError(f"session {session_id} has no recording on this node")
        return str(path)

    def push(self, session_id: str, event: LiveEvent) -> None:
        """Deliver one more live event to the watchers of ``session_id``."""
        self.queues.setdefault(session_id, asyncio.Queue()).put_nowait(event)

    async def watch(self, session_id: str) -> AsyncIterator[LiveEvent]:
        self.calls.append(("watch", session_id))
        if self.operator.role != "admin":
            raise SourceError("watching live sessions needs the admin role")
        for event in self.feeds.get(session_id, []):
            yield event
        queue = self.queues.setdefault(session_id, asyncio.Queue())
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, LiveEnd):
                return

    async def terminate(self, session_id: str, reason: str) -> None:
        self.calls.append(("terminate", session_id, reason))
        self.sessions = [
            replace(s, live=False, end_reason="terminated") if s.id == session_id else s
            for s in self.sessions
        ]
        self.push(session_id, LiveEnd(f"terminated by eve: {reason}"))

    async def lock_user(self, name: str, reason: str) -> None:
        self.calls.append(("lock_user", name, reason))

    async def list_alerts(self, *, since: float | None = None, limit: int = 200) -> list[AlertInfo]:
        self.calls.append(("list_alerts", str(since)))
        return [a for a in self.alerts if since is None or a.at >= since][:limit]

    async def list_requests(
        self, *, pending_only: bool = False, limit: int = 50
    ) -> list[RequestInfo]:
        self.calls.append(("list_requests", str(pending_only)))
        if self.operator.role not in ("admin", "auditor", "approver"):
            raise SourceError("the control API is for admins, auditors and approvers")
        return [r for r in self.requests if r.state == "pending" or not pending_only][:limit]

    def _decidable(self, request_id: int) -> RequestInfo:
        if self.operator.role not in ("admin", "approver"):
            raise SourceError("'approve_request' needs the approver or admin role")
        r = next((r for r in self.requests if r.id == request_id), None)
        if r is None:
            raise SourceError(f"no request #{request_id}")
        if r.state != "pending":
            raise SourceError(f"request #{r.id} is {r.state}, not pending")
        if r.requester == self.operator.name:
            raise SourceError("nobody approves their own request, admins included")
        return r

    def _store(self, r: RequestInfo, what: str, **changes: object) -> RequestInfo:
        step = HistoryEntry(NOW, self.operator.name, what)
        done = replace(r, history=(*r.history, step), **changes)  # type: ignore[arg-type]
        self.requests = [done if x.id == r.id else x for x in self.requests]
        return done

    async def approve_request(
        self, request_id: int, *, duration: float | None = None, reason: str | None = None
    ) -> RequestInfo:
        self.calls.append(("approve_request", str(request_id), str(duration), str(reason)))
        r = self._decidable(request_id)
        if duration is not None and duration > r.duration:
            raise SourceError(f"an approval may shorten request #{r.id}, never lengthen it")
        approval = ApprovalInfo(self.operator.name, NOW, duration, None, reason)
        return self._store(
            r, "approved", state="approved", approvals=(*r.approvals, approval), needed=0,
            approvers=(), grants=(100 + r.id,), decided_at=NOW, decided_by=self.operator.name,
        )  # fmt: skip

    async def deny_request(self, request_id: int, reason: str) -> RequestInfo:
        self.calls.append(("deny_request", str(request_id), reason))
        r = self._decidable(request_id)
        return self._store(
            r, f"denied: {reason}", state="denied", needed=0, approvers=(), decided_at=NOW,
            decided_by=self.operator.name, decision_reason=reason,
        )  # fmt: skip

    async def user_access(self, name: str, *, include_all: bool = False) -> UserAccess:
        self.calls.append(("user_access", name, str(include_all)))
        if self.operator.role not in ("admin", "auditor"):
            raise SourceError("'user_access' needs the admin or auditor role")
        found = ACCESS.get(name)
        if found is None:
            raise SourceError(f"no user named '{name}'; see 'bastion user list'")
        return found

    async def close(self) -> None:
        self.closed = True
