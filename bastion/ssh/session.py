"""One contractor session channel: choose the target, authorise, connect upstream, relay.

The relay moves bytes between the contractor's channel and a channel on a fresh
upstream connection with flow control in both directions (a slow reader pauses
the other side instead of growing buffers). PTY parameters, resizes, signals,
breaks, EOF and the exit status or signal cross unchanged. File transfers are
allowed only when the grant says so and every file is audited.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import asyncssh

from bastion import audit_actions as actions
from bastion.errors import AccessDenied, StoreUnavailable
from bastion.recording import LiveRecording, extract_session_commands
from bastion.session.admission import Refused, find_access
from bastion.session.core import Session, run_admission_hooks
from bastion.session.reasons import (
    STATE_UNAVAILABLE_LOGIN,
    EndReason,
    RefusalReason,
    exit_signal_reason,
)
from bastion.ssh.file_transfer import FileAuditFeed, classify_channel
from bastion.ssh.line_guard import LineGuard
from bastion.ssh.menu import LineInput
from bastion.ssh.scp_audit import parse_scp_command
from bastion.ssh.sftp_audit import FileEvent
from bastion.ssh.sftp_gate import Request as SftpRequest
from bastion.ssh.sftp_gate import SftpGate
from bastion.ssh.sftp_gate import refusal as sftp_refusal
from bastion.ssh.target_choice import ConnectionContext, PtyRequest, Refusal, TargetChoice
from bastion.ssh.upstream import UpstreamError, UpstreamPlan, open_upstream
from bastion.ssh.upstream_channel import UpstreamChannel

log = logging.getLogger(__name__)

FORWARDED_ENV_PREFIXES = ("LANG", "LC_")
_ECHO_SIZE = 256  # target output up to this size, with nothing queued, is written at once
_COALESCE_MAX = 256 * 1024  # coalesced target output is written once it reaches this size


INTERNAL_ERROR = "the bastion could not set up this session; an admin can find why in its log"


class RelaySession(TargetChoice, asyncssh.SSHServerSession[bytes]):
    """The contractor side of one session channel: the SSH adapter of the session core."""

    def __init__(
        self, ctx: ConnectionContext, on_close: Callable[[RelaySession], None] | None = None
    ) -> None:
        self.ctx = ctx
        self._on_close = on_close
        self._client_full = False  # the channel's send buffer is over its high-water mark
        self._conn_full = False  # the whole connection's socket is (FlowControlledConnection)
        self.stalled = False
        """Target output paused because the contractor does not read (either cause)."""
        self.node = ctx.node
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.pty: PtyRequest | None = None
        self.kind = "shell"
        self.command: str | None = None
        self.subsystem: str | None = None
        self.up_conn: asyncssh.SSHClientConnection | None = None
        self.up_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.line: LineInput | None = None
        self._line_ready: asyncio.Event | None = None
        self.pending = bytearray()
        self.client_eof = False
        self.closed = False
        self.exited = False
        self.session: Session | None = None
        self.target_name: str | None = None
        self.files: FileAuditFeed | None = None
        self.recording: LiveRecording | None = None
        self.finished = False
        self._eof_held = False
        self._up_exit: UpstreamChannel | None = None
        self._outcome: str | None = None
        self._out: list[bytes] = []
        self._out_len = 0
        self._out_type: asyncssh.DataType = None
        self._out_scheduled = False
        self.guard: LineGuard | None = None
        self.sftp_gate: SftpGate | None = None
        self._sftp_queue: deque[bytes | SftpRequest] = deque()
        self._sftp_busy = False
        self._guard_asked_at = float("-inf")

    # --- asyncssh server-session callbacks ---------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """Keep the channel."""
        self.chan = chan

    def pty_requested(
        self,
        term_type: str,
        term_size: tuple[int, int, int, int],
        term_modes: Mapping[int, int],
    ) -> bool:
        """Accept and remember the terminal; the target gets the same one."""
        width, height, pixwidth, pixheight = term_size
        self.pty = PtyRequest(term_type, width, height, pixwidth, pixheight, dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        """A shell (or the menu, when no target is named)."""
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        """A command; without a target in the user name its first word names the target."""
        self.kind = "exec"
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        """A subsystem (sftp); checked against the grant once the target is known."""
        self.kind = "subsystem"
        self.subsystem = subsystem
        return True

    def session_started(self) -> None:
        """Decide and connect in the background (input is held until the relay runs)."""
        self.node.spawn(self._start())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Contractor input: to the target, to the menu, or held until the relay starts."""
        up_chan, session = self.up_chan, self.session
        if up_chan is not None and session is not None:
            session.input_seen(len(data))
            if self.recording is not None:
                self.recording.input(data)
                if self.exited:
                    return
            if self.files is not None:
                self.files.client_data(data)
                self._audit_files()
            if self.guard is not None:
                self.guard.input(data)
                return
            if self.sftp_gate is not None:
                self._sftp_queue.extend(self.sftp_gate.client(data))
                self._sftp_pump()
                return
            up_chan.write(data)
            if self.pty is not None and (b"\r" in data or b"\n" in data):
                self._ask_guard()
        elif self.line is not None and self.chan is not None and self._line_ready is not None:
            echo = self.line.feed(data)
            if echo:
                self.chan.write(echo)
            if self.line.done:
                self._line_ready.set()
        else:
            # Not relaying yet: keep this piece and let asyncssh hold the rest (its window
            # then pushes back on the client), so nothing is dropped or buffered unboundedly.
            self.pending += data
            if self.chan is not None:
                self.chan.pause_reading()

    def eof_received(self) -> bool:
        """Contractor EOF: pass it on, keep the channel open for the target's output."""
        self.client_eof = True
        if self.up_chan is not None:
            self.up_chan.write_eof()
        elif self.line is not None and self._line_ready is not None:
            self.line.done = self.line.cancelled = True
            self._line_ready.set()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        """Live resize, forwarded to the target's PTY."""
        if self.pty is not None:
            self.pty = PtyRequest(
                self.pty.term_type, width, height, pixwidth, pixheight, self.pty.modes
            )
        if self.recording is not None:
            self.recording.resize(width, height)
        if self.guard is not None:
            self.guard.tracker.width = width or 80
        if self.up_chan is not None:
            self.up_chan.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        """Signals (e.g. INT from ``ssh`` escape or clients that send them) go to the target."""
        if self.up_chan is not None:
            self.up_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        """Serial-style break, forwarded."""
        if self.up_chan is not None:
            self.up_chan.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        """The contractor is not reading this channel: stop reading from the target."""
        self._client_full = True
        self._flow()

    def resume_writing(self) -> None:
        """The contractor reads again."""
        self._client_full = False
        self._flow()

    def connection_paused(self, paused: bool) -> None:
        """The contractor stopped (or resumed) reading the whole connection."""
        self._conn_full = paused
        self._flow()

    def _flow(self) -> None:
        """Pause the target while either buffer towards the contractor is full (per pause,
        not per byte); the session core times the stall (``stalled_reader_timeout``)."""
        stalled = self._client_full or self._conn_full
        if stalled == self.stalled:
            return
        self.stalled = stalled
        if self.up_chan is not None:
            if stalled:
                self.up_chan.pause_reading()
            else:
                self.up_chan.resume_reading()
        if self.session is not None:
            self.session.output_stalled(stalled)

    def buffered(self) -> int:
        """Bytes this channel holds towards the contractor (read by ``/metrics``)."""
        held = self._out_len + len(self.pending)
        return held + (self.chan.get_write_buffer_size() if self.chan is not None else 0)

    def connection_lost(self, exc: Exception | None) -> None:
        """The contractor's channel is gone: close the upstream side and end the record."""
        self.closed = True
        if self._on_close is not None:
            self._on_close(self)
        if self._line_ready is not None:
            self._line_ready.set()
        if self.up_conn is not None:
            self.up_conn.close()
        # the contractor closing after the target's exit was passed on: an exit
        self._closed(self._outcome or EndReason.CLIENT_CLOSED)

    # --- relay plumbing ------------------------------------------------------------------

    def from_upstream(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Target output to the contractor (called by ``UpstreamChannel``)."""
        gate = self.sftp_gate
        if gate is not None and datatype is None:
            for piece in gate.server(data):  # refusals go in between whole server packets
                self._from_target(piece, None)
            return
        self._from_target(data, datatype)

    def _from_target(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.chan is None or self.closed:
            return
        if self.session is not None:
            self.session.output_seen(len(data))
        if self.recording is not None:
            self.recording.output(data)
            if self.exited:  # the recording just failed and ended the session
                return
        if self.files is not None and datatype is None:
            self.files.server_data(data)
            self._audit_files()
        if self.guard is not None and datatype is None:
            self.guard.output(data)
        # Coalesce what the target sent in one event-loop pass into one write: the
        # contractor's leg then costs one packet (and one syscall) per pass instead
        # of one per upstream packet. No added latency: flushed in the same pass.
        if self._out and datatype != self._out_type:
            self._flush_out()
        if not self._out and len(data) <= _ECHO_SIZE:
            self.chan.write(data, datatype)  # a keystroke's echo: no extra loop pass
            return
        self._out_type = datatype
        self._out.append(data)
        self._out_len += len(data)
        if self._out_len >= _COALESCE_MAX:
            # One pass can bring megabytes (libuv reads up to 32 times per wakeup): write
            # now, so a client that stopped reading pauses the target within this bound.
            self._flush_out()
            return
        if not self._out_scheduled:
            self._out_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_out)

    def _flush_out(self) -> None:
        """Write the coalesced target output to the contractor."""
        self._out_scheduled = False
        if not self._out:
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._out_len = 0
        if self.chan is not None and not self.closed:
            self.chan.write(data, self._out_type)

    def upstream_eof(self) -> None:
        """The target sent EOF: passed on with its exit status, not before.

        OpenSSH sends EOF, then the exit status, then closes. Passing EOF on at once and
        the status only at the close left a window in which the contractor's client,
        with nothing more to send (a ControlMaster above all), closed its channel
        first: the status was never sent and ssh exited 255 with the output in hand.
        So EOF waits for the status (or for the target's close)."""
        self._flush_out()
        self._eof_held = True
        if self._up_exit is not None:
            self._eof_and_exit(self._up_exit)

    def upstream_exit(self, up: UpstreamChannel) -> None:
        """The target sent its exit status or signal: with its EOF, passed on now."""
        self._up_exit = up
        if self._eof_held:
            self._eof_and_exit(up)

    def _eof_and_exit(self, up: UpstreamChannel) -> None:
        self._pass_eof()
        self._outcome = self._end_as(up)

    def _pass_eof(self) -> None:
        """The target's EOF, held until now, to the contractor."""
        if self._eof_held and self.chan is not None and not self.closed and not self.exited:
            self._flush_out()
            self.chan.write_eof()

    def pause_client(self) -> None:
        """Back-pressure from the target."""
        if self.chan is not None and not self.closed:
            self.chan.pause_reading()

    def resume_client(self) -> None:
        """Back-pressure released."""
        if self.chan is not None and not self.closed:
            self.chan.resume_reading()

    def upstream_closed(self, up: UpstreamChannel, exc: Exception | None) -> None:
        """Mirror the target's exit onto the contractor's channel and end the record."""
        self._pass_eof()  # held for a status that did not come
        reason = self._end_as(up)
        if self.up_conn is not None:
            self.up_conn.close()
        self._closed(reason)

    def _end_as(self, up: UpstreamChannel) -> str:
        """Record the target's exit (once), send it to the contractor, and say why the
        session ends."""
        if self._outcome is not None:
            return self._outcome
        if self.recording is not None:
            sig = up.exit_signal[0] if up.exit_signal is not None else None
            self.recording.exit(status=up.exit_status, signal=sig)
        if up.exit_signal is not None:
            signal, core, msg, lang = up.exit_signal
            self._exit(signal=(signal, core, msg, lang))
            reason = exit_signal_reason(signal)
        elif up.exit_status is not None:
            self._exit(status=up.exit_status)
            reason = EndReason.EXIT
        else:
            if self.session is None or not self.session.ending:
                self._stderr(f"bastion: connection to {self.target_name or 'target'} was lost\r\n")
            self._exit(status=255)
            reason = EndReason.UPSTREAM_LOST
        self._outcome = reason
        return reason

    def _closed(self, reason: str) -> None:
        """One leg is down: the session ends (for ``reason`` unless decided before)."""
        session = self.session
        if session is None or self.finished:
            return
        self.finished = True
        session.closed(reason)
        self.node.spawn(self._finish())

    def _exit(
        self, status: int | None = None, signal: tuple[str, bool, str, str] | None = None
    ) -> None:
        if self.exited or self.chan is None or self.closed:
            return
        self._flush_out()
        self.exited = True
        try:
            if signal is not None:
                self.chan.exit_with_signal(*signal)
            else:
                self.chan.exit(status if status is not None else 255)
        except (OSError, asyncssh.Error):  # pragma: no cover - channel already closing
            self.chan.close()

    def _stderr(self, text: str) -> None:
        if self.pty is None:
            text = text.replace("\r\n", "\n")
        if self.chan is not None and not self.closed and not self.exited:
            self._flush_out()
            if self.recording is not None:
                self.recording.output(text.encode())
            try:
                self.chan.write_stderr(text.encode())
            except (OSError, asyncssh.Error):  # pragma: no cover
                pass

    def _audit_files(self, closing: bool = False) -> None:
        feed = self.files
        if feed is None:
            return
        if closing:
            events = feed.close()
        elif feed.events or feed.failure:
            events = feed.take()
        else:
            return
        for ev in events:
            self._audit_file_event(ev, feed)
        if feed.failure is not None:
            failure, feed.failure = feed.failure, None
            self.node.spawn(
                self.node.audit(
                    self.ctx.user.name,
                    actions.FILE_AUDIT_STOPPED,
                    self.target_name,
                    session=self._sid(),
                    protocol=feed.protocol,
                    error=failure,
                )
            )

    def _audit_file_event(self, ev: FileEvent, feed: FileAuditFeed) -> None:
        if ev.op == "download" and ev.bytes and self.session is not None:
            self.session.file_downloaded(ev.path, ev.bytes)
        self.node.spawn(
            self.node.audit(
                self.ctx.user.name,
                actions.file_op(ev.op),
                self.target_name,
                session=self._sid(),
                path=ev.path,
                bytes=ev.bytes,
                ok=ev.ok,
                detail=ev.detail or None,
                protocol=feed.protocol,
                command_paths=list(feed.command_paths) or None,
            )
        )

    def _sid(self) -> str | None:
        return self.session.id if self.session is not None else None

    async def _judge_request(self, session: Session) -> bool:
        """An exec command and its scp paths, judged before anything reaches the target."""
        ok = True
        if self.kind == "exec" and self.command and not session.ending:
            ok = await session.judge("command", self.command, "exact")
        if ok:
            ok = await self._judge_scp_paths(session)
        if not ok:
            if not session.ending:  # denied: nothing reached the target
                session.closed(EndReason.POLICY)
            self._exit(status=1)
            self._closed(EndReason.POLICY)
        return ok

    async def _judge_scp_paths(self, session: Session) -> bool:
        """Legacy scp (``scp -O``): the paths of its command, judged before it reaches the target.

        Files named inside a recursive upload and SFTP requests (modern scp) are not
        judged here; the README says so.
        """
        scp = parse_scp_command(self.command) if self.files is not None and self.command else None
        if scp is None or session.ending or not await session.watches("file"):
            return True
        for path in scp.paths:
            if not await session.judge("file", path, scp.direction):
                return False
        return True

    # --- file guardrails on SFTP ---------------------------------------------------------

    def _sftp_pump(self) -> None:
        """Forward queued client packets in order; stop at a request to judge."""
        queue = self._sftp_queue
        while queue and not self._sftp_busy and self.up_chan is not None and not self.closed:
            item = queue.popleft()
            if isinstance(item, bytes):
                self.up_chan.write(item)
            else:
                self._sftp_busy = True
                self.node.spawn(self._judge_sftp(item))
        if self.chan is not None and self._sftp_busy:
            self.chan.pause_reading()  # the client waits while a request is judged
        if self.sftp_gate is not None and self.sftp_gate.broken and self.session is not None:
            self.session.terminate(EndReason.POLICY, "the file transfer cannot be checked")

    async def _judge_sftp(self, request: SftpRequest) -> None:
        session = self.session
        allowed = True
        try:
            for path, operation in request.paths:
                if session is None or not await session.judge("file", path, operation):
                    allowed = False
                    break
        except Exception:  # never let an unjudged request through
            log.exception("judging an sftp request failed")
            allowed = False
        self._sftp_busy = False
        if session is None or session.ending or self.up_chan is None:
            return
        if self.chan is not None and not self.closed:
            self.chan.resume_reading()
        if allowed:
            self.up_chan.write(request.packet)
        else:
            last = session.last_decision
            why = last.reason if last is not None and last.reason else "refused by a rule"
            gate = self.sftp_gate
            assert gate is not None  # noqa: S101  only judged with a gate
            packet = gate.refuse(sftp_refusal(request.request_id, f"bastion: {why}"))
            if packet is not None:
                self._from_target(packet, None)
        self._sftp_pump()

    # --- command guardrails on a terminal ------------------------------------------------

    def _to_target(self, data: bytes) -> None:
        if self.up_chan is not None and not self.closed:
            self.up_chan.write(data)

    async def _arm_guard(self) -> None:
        """Judge typed lines when a rule could refuse a command here (costs nothing otherwise)."""
        session = self.session
        if session is None or self.pty is None or self.files is not None:
            return  # no terminal, or a file transfer (its paths are judged instead)
        if self.kind == "subsystem":
            return
        self._guard_asked_at = self.node.clock()
        if self.guard is None and await session.watches("command"):
            self.guard = LineGuard(session, self._to_target, self.pty.width or 80)

    def _ask_guard(self) -> None:
        """On Enter without a guard: look again, at most once per poll interval (new rules)."""
        if self.node.clock() - self._guard_asked_at >= self.node.config.timebox.poll_interval:
            self._guard_asked_at = self.node.clock()
            self.node.spawn(self._arm_guard())

    # --- what the session core asks (SessionAdapter) ---------------------------------------

    def tell(self, message: str) -> None:
        """A line on the contractor's terminal (stderr, so file transfers are untouched)."""
        self._stderr(f"\r\n[bastion] {message}\r\n")

    def close(self, reason: str, message: str) -> None:
        """End the session now (time box, revocation, admin, policy, node stop)."""
        self._stderr(f"\r\n[bastion] {message}: closing this session.\r\n")
        self._exit(status=255)
        if self.up_conn is not None:
            self.up_conn.close()
        if self.chan is not None:
            self.chan.close()
            if self._conn_full:
                # The client reads nothing on this connection, so it would never answer
                # the channel close: drop the connection (the audit keeps the reason).
                self.chan.get_connection().abort()

    # --- deciding and connecting ------------------------------------------------------------

    async def _start(self) -> None:
        try:
            await self._open()
        except Refusal as e:
            await self._refuse(e)
        except Refused as e:
            await self._refuse(Refusal(e.reason, e.message))
        except StoreUnavailable:  # e.g. a new channel on a connection opened before the outage
            log.warning("refusing a session of %s: state database unreachable", self.ctx.user.name)
            reason = RefusalReason.STATE_UNAVAILABLE
            await self._refuse(Refusal(reason, STATE_UNAVAILABLE_LOGIN, 255))
        except Exception:  # never leave a channel hanging on a bug; never show its text
            log.exception("setting up a session for %s failed", self.ctx.user.name)
            await self._refuse(Refusal(RefusalReason.INTERNAL_ERROR, INTERNAL_ERROR, 255))

    async def _refuse(self, e: Refusal) -> None:
        session = self.session
        if session is not None and session.life.recorded:
            # The session row exists: it ends like any session, for the refusal's reason.
            if session.recording is not None:
                session.recording.marker(f"refused: {e}")
            session.closed(e.reason)
            self.finished = True
            self.node.spawn(self._finish())
        elif session is not None:
            session.abandon()
        if e.reason not in ("menu-quit", "builtin"):
            await self.node.audit(
                self.ctx.user.name,
                actions.SESSION_REFUSED,
                self.target_name,
                reason=e.reason,
                message=str(e),
                client=self.ctx.client_addr,
                request=self._describe_request(),
                session=self._sid(),
            )
        if str(e):
            self._stderr(f"bastion: {e}\r\n" if e.reason != "builtin" else str(e))
        self._exit(status=e.exit_status)

    def _describe_request(self) -> str:
        if self.kind == "exec":
            return f"exec {self.command!r}"
        if self.kind == "subsystem":
            return f"subsystem {self.subsystem}"
        return "shell" + (" (pty)" if self.pty else "")

    async def _open(self) -> None:
        target_name, login = self.ctx.login_name.target, self.ctx.login_name.login
        if target_name is None:
            target_name, login = await self._target_from_request()
        if self.closed:
            return
        self.target_name = target_name
        node, user = self.node, self.ctx.user
        if self.kind == "subsystem" and self.subsystem != "sftp":
            raise Refusal("subsystem", f"subsystem '{self.subsystem}' is not available")
        rule = classify_channel(self.kind, self.command, self.subsystem)
        access = await node.call(
            find_access,
            node.store,
            user=user,
            target_name=target_name,
            protocol="ssh",
            now=node.clock(),
            login=login,
            options=rule.options if rule is not None else (),
        )
        if access.login is None:
            raise Refusal("no-login", f"target {access.target.name} has no login configured")
        if rule is not None:
            if rule.refusal is not None:
                raise Refusal("unauditable-transfer", rule.refusal)
            self.files = rule.feed
        await run_admission_hooks(
            node,
            access,
            user=user,
            protocol="ssh",
            kind=self.kind,
            client_addr=self.ctx.client_addr,
            command=self.command if self.kind == "exec" else None,
        )
        session = Session(
            node,
            access,
            user=user,
            protocol="ssh",
            kind=self.kind,
            client_addr=self.ctx.client_addr,
            adapter=self,
            description=self._describe_request(),
        )
        self.session = session
        meta: dict[str, object] = {"request": self._describe_request()}
        if self.pty is not None:
            meta.update(term=self.pty.term_type, cols=self.pty.width, rows=self.pty.height)
        await session.start_recording(meta, request=self._describe_request())
        self.recording = session.recording
        if not await self._judge_request(session):
            return
        await self._arm_guard()
        if self.kind == "subsystem" and self.files is not None and await session.watches("file"):
            self.sftp_gate = SftpGate()
        if session.ending or self.closed:
            self._closed(EndReason.CLIENT_CLOSED)
            return
        await self._connect(session)

    async def _connect(self, session: Session) -> None:
        node, user, target, grant = self.node, self.ctx.user, session.target, session.grant
        assert session.login is not None  # noqa: S101  set by admission
        # Set only when create_agent_listener accepted ``ssh -A`` for a grant with "agent".
        agent_path = self.chan.get_agent_path() if self.chan is not None else None
        plan = UpstreamPlan(
            target=target,
            login=session.login,
            key_id=f"{user.name}@{target.name}/{session.id}",
            not_after=grant.not_after,
            permit_pty=self.pty is not None,
            permit_port_forwarding=False,
            permit_agent_forwarding=agent_path is not None,
            agent_path=agent_path,
        )
        try:
            conn, _cert = await open_upstream(node, plan, user=user, session_id=session.id)
        except AccessDenied as e:
            raise Refusal("upstream-refused", str(e)) from e
        except UpstreamError as e:
            raise Refusal(f"upstream-{e.reason}", str(e)) from e
        self.up_conn = conn
        if self.closed or session.ending:
            conn.close()
            self._closed(EndReason.CLIENT_CLOSED)
            return
        env = self._forwarded_env()
        kwargs: dict[str, Any] = {
            "env": env,
            "encoding": None,
            "window": node.config.ssh.channel_window,
        }
        if self.pty is not None:
            kwargs.update(
                request_pty="force",
                term_type=self.pty.term_type,
                term_size=(self.pty.width, self.pty.height, self.pty.pixwidth, self.pty.pixheight),
                term_modes=self.pty.modes,
            )
        else:
            kwargs["request_pty"] = False
        if self.kind == "subsystem":
            kwargs["subsystem"] = self.subsystem
            command: str | None = None
        else:
            command = self.command if self.kind == "exec" else None
        try:
            up_chan, _ = await conn.create_session(lambda: UpstreamChannel(self), command, **kwargs)
        except (asyncssh.ChannelOpenError, OSError, asyncssh.Error) as e:
            conn.close()
            raise Refusal(
                "upstream-channel-refused", f"{target.name} refused the session: {e}"
            ) from e
        self.up_chan = up_chan
        if not session.go_live():  # ended while the channel opened
            up_chan.close()
            conn.close()
            self._closed(EndReason.CLIENT_CLOSED)
            return
        if self.stalled:  # the contractor stopped reading before the relay began
            up_chan.pause_reading()
            session.output_stalled(True)
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            self.data_received(data, None)
        if self.client_eof:
            up_chan.write_eof()
        if self.chan is not None and not self.closed:
            self.chan.resume_reading()

    def _forwarded_env(self) -> dict[str, str]:
        if self.chan is None:
            return {}
        env = self.chan.get_environment()
        return {
            k: v
            for k, v in env.items()
            if isinstance(k, str) and isinstance(v, str) and k.startswith(FORWARDED_ENV_PREFIXES)
        }

    async def _finish(self) -> None:
        session = self.session
        if session is None:
            return
        self._audit_files(closing=True)
        await session.finish(self._searchable_commands)

    async def _searchable_commands(self, path: str) -> list[tuple[float, str]]:
        """What goes into the command search for this channel.

        Exec: the command line itself. A terminal: the lines typed into it. A
        file transfer or a non-terminal stdin carries data, not commands, and is
        not indexed (its files are in the audit log).
        """
        commands: list[tuple[float, str]] = []
        session = self.session
        if self.kind == "exec" and self.command and session is not None:
            started = session.live.started_at if session.live else session.started_at
            commands.append((started, self.command))
        if self.pty is not None and self.kind in ("shell", "exec"):
            commands += await self.node.call(extract_session_commands, path)
        return commands
