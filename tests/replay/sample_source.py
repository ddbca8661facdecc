"""Fixed sample data for the console tests: a ``SessionSource`` over committed recordings.

Like posting's snapshot app: the screens run unchanged, fed by sessions whose times,
names and recordings never change, so Pilot assertions and SVG snapshots are stable.
Search answers from the recordings themselves (typed commands, SQL), the way the
node's index does. A live session plays a scripted list of events and then waits
for more (``push``); ``terminate``/``lock_user`` are recorded and end the watch, as
the node would. The real node is exercised by ``test_app_live_node.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from recorder import RecordingReader, Structured, extract_commands
from replay.source import (
    LiveEnd,
    LiveEvent,
    Operator,
    SearchHit,
    SessionInfo,
    SourceError,
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


class SampleSource:
    """See the module docstring."""

    def __init__(
        self,
        role: str = "admin",
        sessions: list[SessionInfo] | None = None,
        feeds: dict[str, list[LiveEvent]] | None = None,
    ) -> None:
        self.operator = Operator("eve", role)
        self.sessions = list(SESSIONS if sessions is None else sessions)
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

    async def close(self) -> None:
        self.closed = True
