"""Wake-ups between nodes: what an admin action tells every node when it commits.

The state store's PostgreSQL backend sends ``NOTIFY bastion_wake, 'KIND:VALUE'``
inside the admin action's own transaction, so the signal goes out only if the
change committed (PostgreSQL delivers notifications at commit, and drops them on
rollback). A node listening on the channel runs its time-box pass at once for a
session, grant or user it serves, instead of at its next poll. The poll stays:
SQLite has no such signal and a listening connection can be down; a wake-up is
only ever a hint to look at the store now, never a decision carried in itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["WAKE_CHANNEL", "WakeKind", "Wakeup", "parse_wakeup"]

WAKE_CHANNEL = "bastion_wake"
"""The LISTEN/NOTIFY channel (per database: two state stores never hear each other)."""


class WakeKind(StrEnum):
    """What changed."""

    SESSION = "session"
    """An admin asked for a session's end (terminate, lock, disable)."""
    GRANT = "grant"
    """A grant was revoked or its target removed."""
    NODE = "node"
    """A node was asked to drain."""


@dataclass(frozen=True)
class Wakeup:
    """One notification's meaning: which ``kind`` of thing, and its id or name."""

    kind: WakeKind
    value: str

    def payload(self) -> str:
        """The NOTIFY payload text."""
        return f"{self.kind.value}:{self.value}"


def parse_wakeup(payload: str) -> Wakeup | None:
    """The wake-up a payload names, or None for one this version does not know."""
    kind, sep, value = payload.partition(":")
    if not sep or not value:
        return None
    try:
        return Wakeup(WakeKind(kind), value)
    except ValueError:
        return None
