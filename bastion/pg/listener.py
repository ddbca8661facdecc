"""The PostgreSQL front end of a node: TLS, the listener, shared per-node state.

``PgFrontEnd`` holds what every client connection shares (the node, the TLS
context, the cancel routes, the masking rules, the count of logins in
progress) and audits refusals. ``start_pg_listener`` binds the socket.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from bastion.config import PostgresConfig
from bastion.errors import ConfigError
from bastion.pg.cancel import CancelRoutes
from bastion.pg.connection import ClientConnection
from bastion.pg.query_log import MaskRules
from bastion.service import BastionNode

log = logging.getLogger(__name__)

__all__ = ["PgFrontEnd", "server_tls_context", "start_pg_listener"]


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The listener's TLS context (TLS 1.2+); raises ConfigError naming the missing file."""
    for path, what in ((cert, "postgres.tls_cert"), (key, "postgres.tls_key")):
        if not path.exists():
            raise ConfigError(
                f"{what}: {path} does not exist; 'bastion init' makes a self-signed pair, "
                "or set require_tls = false to run without TLS (passwords in cleartext!)"
            )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        raise ConfigError(f"cannot load the PostgreSQL TLS certificate {cert}: {e}") from e
    return ctx


class PgFrontEnd:
    """Per-node state of the PostgreSQL listener."""

    def __init__(self, node: BastionNode, config: PostgresConfig | None = None) -> None:
        self.node = node
        self.config = config if config is not None else node.config.postgres
        cfg = self.config
        if cfg.tls_cert.exists() or cfg.require_tls:
            self.tls: ssl.SSLContext | None = server_tls_context(cfg.tls_cert, cfg.tls_key)
        else:
            self.tls = None
            log.warning("PostgreSQL listener without TLS: tokens travel in cleartext")
        self.cancels = CancelRoutes()
        self.mask_rules = MaskRules(cfg.mask_columns)
        self.unauthenticated = 0
        node.metrics.gauges.update(pg_logins_in_progress=lambda: self.unauthenticated)

    async def refused(
        self,
        user: str | None,
        target: str | None,
        reason: str,
        message: str,
        conn: ClientConnection,
        session_id: str | None = None,
    ) -> None:
        """Audit a refused database connection (who claimed to be whom, and why)."""
        details: dict[str, object] = {
            "reason": reason,
            "message": message,
            "client": conn.client_addr,
            "protocol": "postgres",
            "tls": conn.door.tls,
        }
        if session_id is not None:
            details["session"] = session_id
        await self.node.audit(user or "-", "session.refused", target, **details)


async def start_pg_listener(
    node: BastionNode, host: str | None = None, port: int | None = None
) -> tuple[asyncio.Server, PgFrontEnd]:
    """Listen for database clients; returns the server (its sockets tell the port)."""
    front = PgFrontEnd(node)
    listen = front.config.listen or ("0.0.0.0", 6432)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ClientConnection(front),
        host if host is not None else listen[0],
        port if port is not None else listen[1],
        backlog=512,
        reuse_address=True,
    )
    return server, front
