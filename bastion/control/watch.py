"""One watcher of one live session: a bounded queue fed by the relay, drained to a socket.

``Watcher`` is the recording's subscriber. The relay calls ``event`` on the event loop
for every recorded event while someone watches; it only appends to a deque (no
await, no I/O). If the watcher falls behind by more than ``max_events`` events or
``max_bytes`` bytes it is dropped - the relay never slows down for a slow watcher -
and the stream ends with an error telling the watcher to reconnect.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bastion.control.messages import (
    LiveEvent,
    LiveInput,
    LiveMarker,
    LiveOutput,
    LiveQuery,
    LiveResize,
)
from bastion.pg.query_event import QueryEvent, QueryResolver
from recorder.events import Event, Input, Marker, Output, Resize

__all__ = ["MAX_BEHIND_BYTES", "MAX_BEHIND_EVENTS", "Watcher", "to_live_event"]

MAX_BEHIND_EVENTS = 20_000
MAX_BEHIND_BYTES = 16 * 1024 * 1024


def to_live_event(event: Event, resolver: QueryResolver | None = None) -> LiveEvent | None:
    """The control API's form of a recorded event (None: not shown to watchers).

    ``resolver``: the watch's, which has seen every event before this one back to
    a chunk boundary (``build_snapshot`` fills it), so a ``pg.query`` that refers
    to an earlier event goes out with its text.
    """
    if isinstance(event, Output):
        return LiveOutput(event.time, event.data)
    if isinstance(event, Input):
        return LiveInput(event.time, event.data)
    if isinstance(event, Resize):
        return LiveResize(event.time, event.cols, event.rows)
    if isinstance(event, Marker):
        return LiveMarker(event.time, event.label)
    if resolver is not None:
        event = resolver.resolve(event)
    query = QueryEvent.from_event(event)
    if query is not None:
        return LiveQuery(event.time, query.to_payload())
    return None


class Watcher:
    """A recording subscriber with a bounded backlog (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_events: int = MAX_BEHIND_EVENTS,
        max_bytes: int = MAX_BEHIND_BYTES,
    ) -> None:
        """Create on the event loop that runs the relay."""
        self._loop = loop
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._backlog: deque[Event] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self.dropped: str | None = None
        """Why the watcher was dropped (it fell behind), or None."""
        self.ended: str | None = None
        """The recording's end reason once it ended, or None."""
        self.resolver = QueryResolver()
        """Fills in prepared statements' text: seeded by the snapshot, then every event."""

    # -- the recording's side (RecordingSubscriber) -----------------------------------

    def event(self, event: Event) -> None:
        """Queue one event; drop the watcher instead of growing without bound."""
        if self.dropped is not None or self.ended is not None:
            return
        size = len(event.data) if isinstance(event, Output | Input) else 256
        if len(self._backlog) >= self._max_events or self._bytes + size > self._max_bytes:
            self.dropped = (
                f"this watcher fell more than {len(self._backlog)} events "
                f"({self._bytes} bytes) behind the session and was dropped so the session "
                "is not slowed; watch again for a fresh screen"
            )
            self._backlog.clear()
            self._bytes = 0
        else:
            self._backlog.append(event)
            self._bytes += size
        self._wake.set()

    def closed(self, reason: str) -> None:
        """The recording ended; safe from any thread."""
        self._loop.call_soon_threadsafe(self._close, reason)

    def _close(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._wake.set()

    # -- the control connection's side --------------------------------------------------

    async def next_batch(self) -> list[Event]:
        """Wait for events (or the end / a drop) and take everything queued."""
        while not self._backlog and self.dropped is None and self.ended is None:
            self._wake.clear()
            await self._wake.wait()
        batch = list(self._backlog)
        self._backlog.clear()
        self._bytes = 0
        return batch
