"""Local port forwarding (``ssh -L``), relayed through the target when the grant allows it.

The bastion never opens a connection to the destination itself: it asks the
target's sshd to (direct-tcpip over the upstream connection), so a forward
reaches only what the target can reach, with a certificate that carries
``permit-port-forwarding`` only for grants with ``--allow port-forward``.

All forwards of one client connection are one session of the core: one row,
one recording (a marker per forward opened and closed, with its destination and
byte counts; the forwarded bytes themselves are not recorded), one upstream
connection, ended together by the time box, an admin or a node stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from asyncssh.stream import SSHTCPStreamSession

from bastion import audit_actions as actions
from bastion.errors import AccessDenied
from bastion.service import BastionNode
from bastion.session.admission import Refused, find_access
from bastion.session.core import Session, run_admission_hooks
from bastion.session.reasons import EndReason
from bastion.ssh.login_name import LoginName
from bastion.ssh.upstream import UpstreamError, UpstreamPlan, open_upstream
from bastion.store.models import User

log = logging.getLogger(__name__)

COPY_CHUNK = 64 * 1024


@dataclass(eq=False)
class ForwardingContext:
    """Per client connection: the forwarding session and its one upstream connection."""

    node: BastionNode
    user: User
    login_name: LoginName
    client_addr: str
    upstream: asyncssh.SSHClientConnection | None = None
    session: Session | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    writers: set[asyncssh.SSHWriter[bytes]] = field(default_factory=set)

    def tell(self, message: str) -> None:
        """Forward-only connections have no terminal to warn on; the warning is recorded."""
        log.info("forwarding for %s: %s", self.user.name, message)

    def close(self, reason: str = EndReason.CLIENT_CLOSED, message: str = "") -> None:
        """Drop the upstream connection and every forward on it (idempotent)."""
        self.closed = True
        for w in list(self.writers):
            with contextlib.suppress(OSError, asyncssh.Error):
                w.close()
        if self.upstream is not None:
            self.upstream.close()
        session = self.session
        if session is not None:
            session.closed(reason)
            self.node.spawn(session.finish())


async def _upstream_for(ctx: ForwardingContext) -> asyncssh.SSHClientConnection:
    node = ctx.node
    target_name = ctx.login_name.target
    if target_name is None:
        raise AccessDenied(
            "port forwarding needs the target in the user name: "
            "ssh -N -L PORT:HOST:PORT USER%TARGET@BASTION"
        )
    async with ctx.lock:
        if ctx.closed:
            raise AccessDenied("the forwarding connection was closed")
        access = await node.call(
            find_access,
            node.store,
            user=ctx.user,
            target_name=target_name,
            protocol="ssh",
            now=node.clock(),
            login=ctx.login_name.login,
            options=("port-forward",),
        )
        if ctx.upstream is not None:
            return ctx.upstream
        await run_admission_hooks(
            node,
            access,
            user=ctx.user,
            protocol="ssh",
            kind="forward",
            client_addr=ctx.client_addr,
        )
        session = Session(
            node,
            access,
            user=ctx.user,
            protocol="ssh",
            kind="forward",
            client_addr=ctx.client_addr,
            adapter=ctx,
            description="port forwarding",
        )
        ctx.session = session
        await session.start_recording({"request": "port forwarding"}, request="port forwarding")
        plan = UpstreamPlan(
            target=access.target,
            login=access.login or "",
            key_id=f"{ctx.user.name}@{access.target.name}/{session.id}/forward",
            not_after=access.grant.not_after,
            permit_pty=False,
            permit_port_forwarding=True,
            permit_agent_forwarding=False,
        )
        try:
            conn, _cert = await open_upstream(node, plan, user=ctx.user, session_id=session.id)
        except (AccessDenied, UpstreamError) as e:
            ctx.close(f"upstream-{getattr(e, 'reason', 'refused')}")
            raise
        ctx.upstream = conn
        if ctx.closed or not session.go_live():
            conn.close()
            raise AccessDenied("the forwarding connection was closed")
        return conn


async def _pipe(
    reader: asyncssh.SSHReader[bytes] | asyncio.StreamReader,
    writer: asyncssh.SSHWriter[bytes] | asyncio.StreamWriter,
    count: Session | None,
    inbound: bool,
) -> int:
    total = 0
    try:
        while True:
            data = await reader.read(COPY_CHUNK)
            if not data:
                break
            total += len(data)
            if count is not None:
                if inbound:
                    count.input_seen(len(data))
                else:
                    count.output_seen(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncssh.Error, ConnectionError):
        pass
    return total


class CountedForward(SSHTCPStreamSession[bytes]):
    """A forward's channel that reports its close (it counts against the channel cap)."""

    def __init__(self, relay: Any, on_close: Callable[[], None]) -> None:
        super().__init__(relay)
        self._on_close: Callable[[], None] | None = on_close

    def connection_lost(self, exc: Exception | None) -> None:
        """The channel is gone: uncount it once."""
        super().connection_lost(exc)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


async def admit_forward(
    ctx: ForwardingContext,
    dest_host: str,
    dest_port: int,
    on_close: Callable[[], None] = lambda: None,
) -> asyncssh.SSHTCPSession[bytes]:
    """Open the forward through the target before the client's channel is accepted.

    A refusal (no grant, no ``port-forward`` option, the target cannot reach the
    destination) raises ``ChannelOpenError``, so the client's channel open fails
    with the reason (OpenSSH prints "open failed: administratively prohibited:
    REASON") instead of being accepted and then closed.
    """
    node, user = ctx.node, ctx.user.name
    dest = f"{dest_host}:{dest_port}"
    try:
        conn = await _upstream_for(ctx)
        up_reader, up_writer = await conn.open_connection(dest_host, dest_port)
    except (AccessDenied, Refused, UpstreamError, asyncssh.Error, OSError) as e:
        await node.audit(
            user,
            actions.FORWARD_REFUSED,
            ctx.login_name.target,
            destination=dest,
            reason=str(e),
            client=ctx.client_addr,
            session=ctx.session.id if ctx.session else None,
        )
        raise _open_error(e, dest) from e

    async def relay(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
        await _relay_forward(ctx, dest, reader, writer, up_reader, up_writer)

    return CountedForward(relay, on_close)


def _open_error(e: Exception, dest: str) -> asyncssh.ChannelOpenError:
    """The channel-open failure the client shows: the target's own, or the bastion's."""
    if isinstance(e, asyncssh.ChannelOpenError):  # the target's sshd refused the destination
        return asyncssh.ChannelOpenError(e.code, f"bastion: target refused {dest}: {e.reason}")
    if isinstance(e, (AccessDenied, Refused)):
        return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"bastion: {e}")
    return asyncssh.ChannelOpenError(
        asyncssh.OPEN_CONNECT_FAILED, f"bastion: forward to {dest} failed: {e}"
    )


async def _relay_forward(
    ctx: ForwardingContext,
    dest: str,
    reader: asyncssh.SSHReader[bytes],
    writer: asyncssh.SSHWriter[bytes],
    up_reader: asyncssh.SSHReader[bytes],
    up_writer: asyncssh.SSHWriter[bytes],
) -> None:
    """Relay one admitted forward until both directions end, with its markers and audit."""
    node, user = ctx.node, ctx.user.name
    session = ctx.session
    if session is not None and session.recording is not None:
        session.recording.marker(f"forward open: {dest}")
    await node.audit(
        user,
        actions.FORWARD_OPEN,
        ctx.login_name.target,
        destination=dest,
        grant=session.grant.id if session else None,
        session=session.id if session else None,
    )
    ctx.writers.add(writer)
    try:
        sent, received = await asyncio.gather(
            _pipe(reader, up_writer, session, True), _pipe(up_reader, writer, session, False)
        )
    finally:
        ctx.writers.discard(writer)
    with contextlib.suppress(OSError, asyncssh.Error):
        up_writer.close()
        writer.close()
    if session is not None and session.recording is not None and not session.ending:
        session.recording.marker(f"forward close: {dest} in={sent} out={received}")
    await node.audit(
        user,
        actions.FORWARD_CLOSE,
        ctx.login_name.target,
        destination=dest,
        bytes_in=sent,
        bytes_out=received,
        session=session.id if session else None,
    )
