"""The recording side of a relayed session: start it, react to its failure, index, repack.

A mixin of ``RelaySession`` so the relay module stays about moving bytes. The
rule it enforces is the product's: a session never runs unrecorded (unless the
admin chose ``recording.on_failure = "continue"``, audited).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bastion.live import LiveSession
from bastion.recording import LiveRecording, extract_session_commands
from bastion.service import BastionNode
from bastion.session_end import RecordingUnavailable, open_session_recording, recording_broke
from bastion.ssh.target_choice import ConnectionContext, PtyRequest, Refusal
from bastion.store.models import Grant, Target

log = logging.getLogger(__name__)


class SessionRecording:
    """Recording duties of ``RelaySession``."""

    ctx: ConnectionContext
    node: BastionNode
    pty: PtyRequest | None
    kind: str
    command: str | None
    login: str | None
    session_id: str | None
    recording: LiveRecording | None
    live: LiveSession | None

    if TYPE_CHECKING:

        def _describe_request(self) -> str:
            """Provided by the relay."""

        def _target_name(self) -> str | None:
            """Provided by the relay."""

        def terminate(self, reason: str, message: str) -> None:
            """Provided by the relay."""

    async def _start_recording(self, target: Target, grant: Grant, now: float) -> str | None:
        """Open the session's recording; without one the session does not start."""
        node, user = self.node, self.ctx.user
        assert self.session_id is not None
        meta: dict[str, object] = {
            "user": user.name,
            "target": target.name,
            "login": self.login,
            "grant": grant.id,
            "node": node.node,
            "protocol": "ssh",
            "client": self.ctx.client_addr,
            "request": self._describe_request(),
            "started_at": now,
        }
        if self.pty is not None:
            meta.update(term=self.pty.term_type, cols=self.pty.width, rows=self.pty.height)
        try:
            self.recording = await open_session_recording(
                node,
                self.session_id,
                meta,
                self._recording_failed,
                user=user.name,
                target=target.name,
            )
        except RecordingUnavailable as e:
            raise Refusal("recording-unavailable", str(e)) from e
        if self.recording is None:
            return None
        return self.recording.writer.location

    def _recording_failed(self, message: str) -> None:
        """The recording broke mid-session: end the session (fail closed) and audit it."""
        recording_broke(
            self.node,
            user=self.ctx.user.name,
            target=self._target_name(),
            session_id=self.session_id,
            message=message,
            terminate=self.terminate,
        )

    async def _searchable_commands(self, path: str) -> list[tuple[float, str]]:
        """What goes into the command search for this channel.

        Exec: the command line itself. A terminal: the lines typed into it. A
        file transfer or a non-terminal stdin carries data, not commands, and is
        not indexed (its files are in the audit log).
        """
        commands: list[tuple[float, str]] = []
        if self.kind == "exec" and self.command:
            started = self.live.started_at if self.live else self.node.clock()
            commands.append((started, self.command))
        if self.pty is not None and self.kind in ("shell", "exec"):
            commands += await self.node.call(extract_session_commands, path)
        return commands
