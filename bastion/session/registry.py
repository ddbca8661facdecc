"""Every session this node holds, from admission to the final row.

The time box (``timebox.LiveSessions``) watches only live sessions; this registry
also holds those still being set up and those still being sealed, so that a
stopping node can end every one of them and wait until each recording is sealed
and each row is final before the process exits.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.session.core import Session


class SessionRegistry:
    """The node's sessions in any phase before ``ended``."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def add(self, session: Session) -> None:
        """A session was admitted."""
        self._sessions[session.id] = session
        self._empty.clear()

    def discard(self, session: Session) -> None:
        """A session ended (or was abandoned before it started)."""
        self._sessions.pop(session.id, None)
        if not self._sessions:
            self._empty.set()

    def get(self, session_id: str) -> Session | None:
        """The session with that id on this node, if any."""
        return self._sessions.get(session_id)

    def all(self) -> list[Session]:
        """Every session held now (a copy)."""
        return list(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    async def wait_empty(self, timeout: float) -> bool:  # noqa: ASYNC109  answers False on timeout
        """Wait until no session is held; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True
