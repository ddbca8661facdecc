"""The PostgreSQL listener of a node: bind the socket, one ``ClientConnection`` per client."""

from __future__ import annotations

import asyncio

from bastion.pg.connection import ClientConnection
from bastion.pg.front_end import PgFrontEnd, server_tls_context
from bastion.proxied import accepting
from bastion.service import BastionNode

__all__ = ["PgFrontEnd", "server_tls_context", "start_pg_listener"]


async def start_pg_listener(
    node: BastionNode, host: str | None = None, port: int | None = None
) -> tuple[asyncio.Server, PgFrontEnd]:
    """Listen for database clients; returns the server (its sockets tell the port)."""
    front = PgFrontEnd(node)
    # keys this node handed out before a crash: their connections are gone
    await node.call(node.store.release_node_cancel_keys, node.node)
    listen = front.config.listen or ("0.0.0.0", 6432)  # noqa: S104  documented default
    loop = asyncio.get_running_loop()
    cfg = front.config
    server = await loop.create_server(
        accepting(
            lambda: ClientConnection(front),
            proxy_protocol=cfg.proxy_protocol,
            trusted=cfg.trusted_proxies,
            timeout=cfg.login_timeout,
            listener="postgres",
        ),
        host if host is not None else listen[0],
        port if port is not None else listen[1],
        backlog=512,
        reuse_address=True,
        reuse_port=node.config.worker > 0,
    )
    return server, front
