"""The target side of a relayed session channel.

A thin asyncssh client-session adapter: every callback is handed to the
contractor side (``bastion.ssh.session.RelaySession``) through the ``Relay``
protocol, so flow control and exit mirroring live in one place.
"""

from __future__ import annotations

from typing import Protocol

import asyncssh


class Relay(Protocol):
    """What the target side needs from the contractor side."""

    def from_upstream(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Target output."""

    def upstream_eof(self) -> None:
        """Target EOF."""

    def upstream_exit(self, up: UpstreamChannel) -> None:
        """Target exit status or signal received."""

    def pause_client(self) -> None:
        """Stop reading contractor input (target not reading)."""

    def resume_client(self) -> None:
        """Resume reading contractor input."""

    def upstream_closed(self, up: UpstreamChannel, exc: Exception | None) -> None:
        """Target channel closed."""


class UpstreamChannel(asyncssh.SSHClientSession[bytes]):
    """The target side of a relay; forwards everything to the contractor side."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Target output to the contractor."""
        self.relay.from_upstream(data, datatype)

    def eof_received(self) -> bool:
        """Pass EOF on; stay half-open to receive the exit status."""
        self.relay.upstream_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        """The exit status, for the contractor's channel."""
        self.exit_status = status
        self.relay.upstream_exit(self)

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        """The exit signal, for the contractor's channel."""
        self.exit_signal = (signal, core_dumped, msg, lang)
        self.relay.upstream_exit(self)

    def pause_writing(self) -> None:
        """The target is not reading: stop reading from the contractor."""
        self.relay.pause_client()

    def resume_writing(self) -> None:
        """The target reads again."""
        self.relay.resume_client()

    def connection_lost(self, exc: Exception | None) -> None:
        """The target channel closed: finish the contractor's channel the same way."""
        self.relay.upstream_closed(self, exc)
