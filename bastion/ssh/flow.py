"""Connection-level back-pressure for the contractor's SSH connections.

asyncssh pauses a channel when the *channel's* send buffer grows (the client's
window is used up), but it ignores its transport's ``pause_writing``: a client
that advertises a huge window and then stops reading its socket would make the
node buffer the target's output without bound in the transport. This connection
subclass passes the transport's pause and resume on to the server object, which
pauses every relay of the connection (one flag flip per pause, nothing per byte).
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast, runtime_checkable

import asyncssh

TRANSPORT_HIGH_WATER = 1024 * 1024
"""Bytes queued on a contractor's socket before its relays pause (resumed at a quarter)."""


@runtime_checkable
class WriteFlow(Protocol):
    """The server object's side: told when the connection's socket stops draining."""

    def writing_paused(self, paused: bool) -> None:
        """True: the client stopped reading the connection; False: it reads again."""


class FlowControlledConnection(asyncssh.SSHServerConnection):
    """An asyncssh server connection whose transport's back-pressure reaches the relays."""

    transport_paused: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Raise the socket's high-water mark from asyncio's 64 KiB: a fast reader's
        bursts then never pause the relays (a pause costs a round trip to the target)."""
        set_limits = getattr(transport, "set_write_buffer_limits", None)
        if set_limits is not None:  # a socket transport (a wrapped one keeps its own)
            set_limits(high=TRANSPORT_HIGH_WATER)
        super().connection_made(transport)

    def pause_writing(self) -> None:
        """The socket's send buffer is over its high-water mark: pause the relays."""
        self.transport_paused = True
        self._tell(True)

    def resume_writing(self) -> None:
        """Drained below the low-water mark: the relays read from their targets again."""
        self.transport_paused = False
        self._tell(False)

    def _tell(self, paused: bool) -> None:
        owner = self.get_owner()
        if isinstance(owner, WriteFlow):
            owner.writing_paused(paused)

    def buffered(self) -> int:
        """Bytes waiting in this connection's transport (read by ``/metrics``)."""
        # asyncssh keeps the transport as ``_transport``; uvloop's transports are not
        # asyncio.Transport subclasses, hence the cast rather than an isinstance.
        transport = cast(asyncio.Transport | None, getattr(self, "_transport", None))
        return transport.get_write_buffer_size() if transport is not None else 0
