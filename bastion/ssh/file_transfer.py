"""Which channels are file transfers, what grant option each needs, and their audit feed.

OpenSSH ≥ 9 ``scp`` speaks SFTP, so the ``sftp`` subsystem opens with either the
``sftp`` or the ``scp`` option; legacy ``scp -O`` (exec ``scp -t``/``-f``) and
``rsync --server`` need ``scp``. The option is a policy and audit boundary, not a
sandbox: a granted shell can still move bytes with ``cat``; the recording is what
captures that.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field

from bastion.ssh.scp_audit import ScpAuditError, ScpAuditor, parse_scp_command
from bastion.ssh.sftp_audit import FileEvent, SftpAuditError, SftpAuditor

log = logging.getLogger(__name__)

#: Programs whose exec requests count as file transfer (first word of the command).
TRANSFER_PROGRAMS = frozenset({"scp", "rsync"})


@dataclass
class FileAuditFeed:
    """Feeds relayed plaintext to an scp or SFTP observer and collects what it saw.

    An observer that meets bytes it cannot parse is dropped (the error is kept as
    ``failure`` for an audit row); the transfer itself is never disturbed.
    """

    observer: SftpAuditor | ScpAuditor | None
    protocol: str
    command_paths: tuple[str, ...] = ()
    events: list[FileEvent] = field(default_factory=list)
    failure: str | None = None

    def _run(self, data: bytes, client: bool) -> None:
        if self.observer is None:
            return
        try:
            if client:
                self.events += self.observer.client_data(data)
            else:
                self.events += self.observer.server_data(data)
        except (SftpAuditError, ScpAuditError) as e:
            log.warning("%s audit stopped: %s", self.protocol, e)
            self.events += getattr(e, "events", [])
            self.failure = str(e)
            self.observer = None

    def client_data(self, data: bytes) -> None:
        """Bytes the contractor sent."""
        self._run(data, client=True)

    def server_data(self, data: bytes) -> None:
        """Bytes the target sent."""
        self._run(data, client=False)

    def take(self) -> list[FileEvent]:
        """Events since the last call."""
        events, self.events = self.events, []
        return events

    def close(self) -> list[FileEvent]:
        """Flush what is still open when the channel ends."""
        if self.observer is not None:
            self.events += self.observer.close()
            self.observer = None
        return self.take()


@dataclass(frozen=True)
class TransferRule:
    """A file-transfer channel: the grant options that open it (any one) and its feed."""

    options: tuple[str, ...]
    feed: FileAuditFeed | None
    refusal: str | None = None
    """Set when the request is a transfer the bastion could not audit: refuse it."""


def _program(command: str) -> str:
    words = command.strip().split(None, 1)
    return posixpath.basename(words[0]) if words else ""


def classify_channel(kind: str, command: str | None, subsystem: str | None) -> TransferRule | None:
    """The transfer rule for a channel request, or None when it is not a file transfer.

    ``kind`` is "shell", "exec" or "subsystem". Subsystems other than sftp are not
    offered at all; the caller refuses them.
    """
    if kind == "subsystem" and subsystem == "sftp":
        return TransferRule(("sftp", "scp"), FileAuditFeed(SftpAuditor(), "sftp"))
    if kind == "exec" and command is not None and _program(command) in TRANSFER_PROGRAMS:
        if _program(command) == "rsync":
            return TransferRule(("scp",), None)
        scp = parse_scp_command(command)
        if scp is None:
            # e.g. "scp -t x; rm -rf y": not a plain transfer, so not one we could audit.
            return TransferRule(
                ("scp",), None, "this scp command is not a plain scp transfer; use scp as is"
            )
        return TransferRule(("scp",), FileAuditFeed(ScpAuditor(scp.direction), "scp", scp.paths))
    return None
