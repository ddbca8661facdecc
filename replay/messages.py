"""Messages screens send to the app: "open this session in the player / live view",
"open the access requests", "show this user's access", "open the alerts".

Why messages: screens do not know how the app finds recordings or which screens it
stacks; they say what the user asked for and the app decides (``ConsoleApp``).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from replay.source import SessionInfo

__all__ = ["OpenAccess", "OpenAlerts", "OpenLive", "OpenPlayer", "OpenRequests"]


@dataclass
class OpenPlayer(Message):
    """Play a session's recording, optionally from ``start_at`` seconds."""

    session_id: str
    title: str = ""
    start_at: float | None = None
    marker: str | None = None
    """Start at the marker nearest ``start_at`` whose label begins with this."""
    highlight: str | None = None
    """Text to highlight on the screen (a search's); ``n``/``N`` then step ``matches``."""
    matches: tuple[float, ...] = ()
    """Offsets of the search's hits in this session, for ``n``/``N``."""


@dataclass
class OpenLive(Message):
    """Watch a live session."""

    session: SessionInfo


@dataclass
class OpenRequests(Message):
    """Show the access requests (pending first)."""


@dataclass
class OpenAccess(Message):
    """Show what ``user`` can reach now and why."""

    user: str


@dataclass
class OpenAlerts(Message):
    """Show the alerts (newest first)."""
