"""What the TUI needs from a bastion node: the ``SessionSource`` protocol and its data.

Why a protocol of our own: the app must run against a real node (through
``bastion.control.client.ControlClient``) and, in tests and for offline use, against
fixed sample data (``replay.local_source``). Screens only ever see this protocol, so
Pilot and snapshot tests drive exactly the code a real console runs.

The data types are the control API's own (``bastion.control.messages``, which
imports nothing but the standard library), so ``ControlClient`` satisfies the
protocol as it is and sample sources build the same objects. Times: ``started_at``,
``ended_at``, ``at`` and ``since`` are Unix seconds; every ``offset`` is seconds since
the session started (the clock of the recording's events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from bastion.access_report import GrantWhy, TargetAccess, UserAccess, Way
from bastion.control.messages import (
    AlertInfo,
    ApprovalInfo,
    ControlError,
    HistoryEntry,
    LiveEnd,
    LiveEvent,
    LiveInput,
    LiveMarker,
    LiveOutput,
    LiveQuery,
    LiveResize,
    Operator,
    RequestInfo,
    SearchHit,
    SessionInfo,
    Snapshot,
)

__all__ = [
    "AlertInfo",
    "ApprovalInfo",
    "GrantWhy",
    "HistoryEntry",
    "LiveEnd",
    "LiveEvent",
    "LiveInput",
    "LiveMarker",
    "LiveOutput",
    "LiveQuery",
    "LiveResize",
    "Operator",
    "RequestInfo",
    "SearchHit",
    "SessionInfo",
    "SessionSource",
    "Snapshot",
    "SourceError",
    "TargetAccess",
    "UserAccess",
    "Way",
]


SourceError = ControlError
"""A request to the node failed; the message says why and what to do."""


class SessionSource(Protocol):
    """The node operations the console uses; every method raises SourceError on refusal."""

    async def whoami(self) -> Operator:
        """The operator this console acts as."""
        ...

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
        """Sessions matching every given filter, newest first."""
        ...

    async def search(
        self,
        text: str,
        *,
        user: str | None = None,
        target: str | None = None,
        since: float | None = None,
        limit: int = 200,
    ) -> list[SearchHit]:
        """Commands and queries containing ``text``."""
        ...

    async def recording_path(self, session_id: str) -> str:
        """A local path of the session's recording file (live or closed)."""
        ...

    def watch(self, session_id: str) -> AsyncIterator[LiveEvent]:
        """A ``Snapshot``, then the live events, ending with ``LiveEnd``."""
        ...

    async def terminate(self, session_id: str, reason: str) -> None:
        """End a live session; the contractor sees ``reason``."""
        ...

    async def lock_user(self, name: str, reason: str) -> None:
        """Refuse the user's logins and end their live sessions."""
        ...

    async def list_requests(
        self, *, pending_only: bool = False, limit: int = 50
    ) -> list[RequestInfo]:
        """Pending access requests (longest waiting first), then recent decided ones."""
        ...

    async def approve_request(
        self, request_id: int, *, duration: float | None = None, reason: str | None = None
    ) -> RequestInfo:
        """Approve as this operator, optionally for less time than asked."""
        ...

    async def deny_request(self, request_id: int, reason: str) -> RequestInfo:
        """Deny a pending request; the requester sees ``reason``."""
        ...

    async def user_access(self, name: str, *, include_all: bool = False) -> UserAccess:
        """What ``name`` can reach now and why (``include_all``: history too)."""
        ...

    async def list_alerts(self, *, since: float | None = None, limit: int = 200) -> list[AlertInfo]:
        """Alerts and policy decisions, newest first."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...
