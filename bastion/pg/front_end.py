"""What every PostgreSQL client connection of a node shares.

``PgFrontEnd`` holds the node, the listener's settings, the TLS context, the
cancel routes, the masking rules and the logins in progress (``StartupLimits``), and
audits refusals. ``Peer`` is all the login steps need to know of a connection.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from bastion import audit_actions as actions
from bastion.config import PostgresConfig
from bastion.errors import ConfigError
from bastion.pg.cancel import CancelRoutes
from bastion.pg.masking import Masking
from bastion.pg.query_log import MaskRules
from bastion.pg.tls_cert import ca_path, legacy_self_signed
from bastion.service import BastionNode
from bastion.startups import StartupLimits

log = logging.getLogger(__name__)

__all__ = ["TLS12_CIPHERS", "Peer", "PgFrontEnd", "server_tls_context"]


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a database connection, as far as the login can tell."""

    client_addr: str
    tls: bool
    host: str = "?"
    """The peer address per-source limits key on (as ``StartupLimits.admit`` got it)."""


TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
"""TLS 1.2 suites: forward-secret AEAD only (no CBC, no RSA key exchange). TLS 1.3's
own suites are all AEAD and are not affected by this string."""


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
    ctx.set_ciphers(TLS12_CIPHERS)
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
            if legacy_self_signed(cfg.tls_cert):
                log.warning(
                    "%s is a self-signed CA certificate from an older 'bastion init': strict "
                    "TLS clients refuse it. Move it and its key aside and run 'bastion init' "
                    "again for a leaf and %s to give verify-full clients (README, Databases)",
                    cfg.tls_cert,
                    ca_path(cfg.tls_cert),
                )
        else:
            self.tls = None
            log.warning("PostgreSQL listener without TLS: tokens travel in cleartext")
        self.cancels = CancelRoutes()
        self.mask_rules = MaskRules(cfg.mask_columns)
        self.mask_patterns = tuple(re.compile(p) for p in cfg.mask_patterns)
        self.masking = Masking(self.mask_rules, timeout=cfg.connect_timeout)
        self.startups = StartupLimits(cfg.max_startups, cfg.per_source_max_startups)
        """Logins in progress (max_startups, per_source_max_startups)."""
        self.refusing = 0
        """Connections refused at capacity still being answered politely (TLS, then the
        FATAL); at most ``max_startups``, beyond that they are refused at accept."""
        node.metrics.gauges.update(pg_logins_in_progress=lambda: self.startups.in_progress)

    async def refused(
        self,
        user: str | None,
        target: str | None,
        reason: str,
        message: str,
        peer: Peer,
        session_id: str | None = None,
    ) -> None:
        """Audit a refused database connection (who claimed to be whom, and why)."""
        details: dict[str, object] = {
            "reason": reason,
            "message": message,
            "client": peer.client_addr,
            "protocol": "postgres",
            "tls": peer.tls,
        }
        if session_id is not None:
            details["session"] = session_id
        await self.node.audit(user or "-", actions.SESSION_REFUSED, target, **details)
