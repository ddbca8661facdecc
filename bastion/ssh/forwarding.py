"""Local port forwarding (``ssh -L``), relayed through the target when the grant allows it.

The bastion never opens a connection to the destination itself: it asks the
target's sshd to (direct-tcpip over the upstream connection), so a forward
reaches only what the target can reach, with a certificate that carries
``permit-port-forwarding`` only for grants with ``--allow port-forward``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import asyncssh

from bastion.errors import AccessDenied
from bastion.grants import authorize, require_option
from bastion.ids import new_session_id
from bastion.live import LiveSession
from bastion.service import BastionNode
from bastion.ssh.login_name import LoginName
from bastion.ssh.upstream import UpstreamError, UpstreamPlan, open_upstream
from bastion.store.models import Grant, User

log = logging.getLogger(__name__)

COPY_CHUNK = 64 * 1024


@dataclass(eq=False)
class ForwardingContext:
    """Per client connection: one upstream connection shared by its forwards."""

    node: BastionNode
    user: User
    login_name: LoginName
    client_addr: str
    upstream: asyncssh.SSHClientConnection | None = None
    grant: Grant | None = None
    live: LiveSession | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    def notify(self, message: str) -> None:
        """Forward-only connections have no terminal to warn on; the end is audited."""
        log.info("forwarding for %s: %s", self.user.name, message)

    def terminate(self, reason: str, message: str) -> None:
        """Time box: drop the upstream connection and every forward on it."""
        self.node.spawn(
            self.node.audit(
                self.user.name,
                "forward.terminated",
                self.login_name.target,
                reason=reason,
                message=message,
            )
        )
        self.close()

    def close(self) -> None:
        """Close the upstream connection (idempotent)."""
        self.closed = True
        if self.live is not None:
            self.node.live.remove(self.live.session_id)
        if self.upstream is not None:
            self.upstream.close()


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
        target = await node.call(node.store.get_target, target_name)
        if target is None:
            raise AccessDenied(f"no grant for {target_name}")
        grants = await node.call(node.store.list_grants, user_id=ctx.user.id, target_id=target.id)
        now = node.clock()
        grant = authorize(grants, target.name, ctx.login_name.login, now, target.default_login)
        require_option(grant, "port-forward")
        if ctx.upstream is not None:
            return ctx.upstream
        login = ctx.login_name.login or grant.login or target.default_login or ""
        session_id = new_session_id()
        plan = UpstreamPlan(
            target=target,
            login=login,
            key_id=f"{ctx.user.name}@{target.name}/{session_id}/forward",
            not_after=grant.not_after,
            permit_pty=False,
            permit_port_forwarding=True,
            permit_agent_forwarding=False,
        )
        conn, _cert = await open_upstream(node, plan, user=ctx.user, session_id=session_id)
        ctx.upstream, ctx.grant = conn, grant
        ctx.live = LiveSession(
            session_id=session_id,
            user=ctx.user.name,
            target=target.name,
            grant_id=grant.id,
            not_after=grant.not_after,
            handle=ctx,
            started_at=now,
            last_input=now,
        )
        node.live.add(ctx.live)
        return conn


async def _pipe(
    reader: asyncssh.SSHReader[bytes] | asyncio.StreamReader,
    writer: asyncssh.SSHWriter[bytes] | asyncio.StreamWriter,
) -> int:
    total = 0
    try:
        while True:
            data = await reader.read(COPY_CHUNK)
            if not data:
                break
            total += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncssh.Error, ConnectionError):
        pass
    return total


async def open_forward(
    ctx: ForwardingContext,
    dest_host: str,
    dest_port: int,
    reader: asyncssh.SSHReader[bytes],
    writer: asyncssh.SSHWriter[bytes],
) -> None:
    """Relay one forwarded TCP connection through the target, or refuse and audit why."""
    node, user = ctx.node, ctx.user.name
    dest = f"{dest_host}:{dest_port}"
    try:
        conn = await _upstream_for(ctx)
        up_reader, up_writer = await conn.open_connection(dest_host, dest_port)
    except (AccessDenied, UpstreamError, asyncssh.Error, OSError) as e:
        await node.audit(
            user,
            "forward.refused",
            ctx.login_name.target,
            destination=dest,
            reason=str(e),
            client=ctx.client_addr,
        )
        writer.close()
        return
    await node.audit(
        user,
        "forward.open",
        ctx.login_name.target,
        destination=dest,
        grant=ctx.grant.id if ctx.grant else None,
    )
    sent, received = await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    with contextlib.suppress(OSError, asyncssh.Error):
        up_writer.close()
        writer.close()
    await node.audit(
        user,
        "forward.close",
        ctx.login_name.target,
        destination=dest,
        bytes_in=sent,
        bytes_out=received,
    )
