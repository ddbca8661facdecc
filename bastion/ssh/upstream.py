"""The bastion's own SSH client to a target: fresh certificate, pinned host key.

Every upstream connection gets a new key pair and a certificate scoped to the
target's principal, the grant's window and the bastion's source address. The
target's host key must match what the admin pinned (or be signed by a host CA
the admin named); there is no trust on first use here.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import asyncssh

from bastion import audit_actions as actions
from bastion.ca import IssuedCertificate
from bastion.errors import AccessDenied, BastionError
from bastion.service import BastionNode
from bastion.store.models import CertificateRecord, Target, User


class UpstreamError(BastionError):
    """The target could not be reached or refused the bastion; the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def network_words(e: BaseException) -> str:
    """A network failure in words for the contractor (the exception itself goes to the audit)."""
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, asyncssh.Error):
        return e.reason or "SSH error"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return "network error"


@dataclass(frozen=True)
class UpstreamPlan:
    """What to connect to and with which certificate options."""

    target: Target
    login: str
    key_id: str
    not_after: float
    permit_pty: bool
    permit_port_forwarding: bool
    permit_agent_forwarding: bool
    agent_path: str | None = None


def route_source_address(host: str, port: int) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        return str(s.getsockname()[0])


def known_hosts_for(
    target: Target,
) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """Trusted host keys and host CA keys for ``target`` (raises AccessDenied if none)."""
    keys = [asyncssh.import_public_key(k) for k in target.host_keys]
    cas = [asyncssh.import_public_key(k) for k in target.host_ca_keys]
    if not keys and not cas:
        raise AccessDenied(
            f"target {target.name} has no pinned host key; an admin must run "
            f"'bastion target add {target.name} ... --host-key FILE' (or --scan)"
        )
    return keys, cas, []


async def _source_addresses(
    target: Target, configured: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, int]]:
    """Addresses for the certificate's source-address, and the one to bind to."""
    if configured:
        return configured, (configured[0], 0)
    try:
        detected = await asyncio.to_thread(route_source_address, target.host, target.port)
    except OSError as e:
        raise UpstreamError(
            "unreachable",
            f"cannot route to {target.name} ({target.host}:{target.port}): {network_words(e)}",
        ) from e
    return (detected,), (detected, 0)


UPSTREAM_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
"""The bastion is the client on this leg, so its order decides: AES-GCM first.

asyncssh's chacha20-poly1305 builds new cipher objects for every packet; AES-GCM
reuses one and has AES-NI, so relaying costs far less CPU (see docs/decisions.md).
"""


_MSG_IGNORE = 2  # RFC 4253 §11.2
_EMPTY_STRING = b"\0\0\0\0"  # an SSH string of length 0


def drop_cbc_chaff(
    conn: asyncssh.SSHClientConnection | asyncssh.SSHServerConnection, ciphers: Iterable[str]
) -> bool:
    """Stop ``conn`` sending an empty SSH_MSG_IGNORE before every packet (True if done).

    asyncssh precedes every encrypted packet with one: RFC 4251 §9.3.1's
    countermeasure for CBC's chained IVs. With AES-GCM, AES-CTR or
    chacha20-poly1305 it protects nothing, yet on a relay it doubles the
    packets, encryptions and send syscalls of every keystroke on both legs and
    wakes each peer twice. Nothing is changed when any of ``ciphers`` (what this
    connection can negotiate; empty means asyncssh's defaults, which include CBC)
    is a CBC cipher. Only that exact empty IGNORE is skipped; every other packet
    goes through asyncssh unchanged.
    """
    offered = tuple(ciphers)
    if not offered or any("-cbc" in c for c in offered):
        return False
    send = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, handler: object = None) -> None:
        if pkttype != _MSG_IGNORE or args != (_EMPTY_STRING,):
            send(pkttype, *args, handler=handler)  # type: ignore[arg-type]

    conn.send_packet = send_packet  # type: ignore[method-assign]
    return True


async def _dial(
    plan: UpstreamPlan,
    cert: IssuedCertificate,
    local_addr: tuple[str, int],
    connect_timeout: float,
) -> asyncssh.SSHClientConnection:
    target = plan.target
    known_hosts = known_hosts_for(target)
    where = f"{target.name} ({target.host}:{target.port})"
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                target.port,
                username=plan.login,
                client_keys=[(cert.private_key, cert.certificate)],
                known_hosts=known_hosts,
                agent_path=plan.agent_path,
                agent_forwarding=plan.agent_path is not None,
                config=None,
                preferred_auth=["publickey"],
                local_addr=local_addr,
                encoding=None,
                connect_timeout=connect_timeout,
                keepalive_interval=30,
                encryption_algs=UPSTREAM_CIPHERS,
            ),
            timeout=connect_timeout + 1,
        )
    except asyncssh.HostKeyNotVerifiable as e:
        raise UpstreamError(
            "host-key-mismatch",
            f"the host key of {where} does not match the pinned key: refusing to connect "
            "(possible man-in-the-middle). If the host was legitimately re-keyed, an admin "
            "must pin the new key.",
        ) from e
    except asyncssh.PermissionDenied as e:
        raise UpstreamError(
            "refused",
            f"{where} refused the bastion's certificate for login '{plan.login}'; "
            f"run 'bastion target setup {target.name}' and apply it on the host",
        ) from e
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise UpstreamError("unreachable", f"cannot connect to {where}: {network_words(e)}") from e
    drop_cbc_chaff(conn, UPSTREAM_CIPHERS)
    return conn


async def open_upstream(
    node: BastionNode, plan: UpstreamPlan, *, user: User, session_id: str | None
) -> tuple[asyncssh.SSHClientConnection, IssuedCertificate]:
    """Issue, record and audit a certificate, then log in to the target with it.

    The certificate is stored before it is used, so even a connection that fails
    (host key mismatch, refusal) leaves its serial in the state store.

    Raises AccessDenied (no pinned host key) or UpstreamError ("host-key-mismatch",
    "refused", "unreachable", "grant-ended"), audited as ``upstream.<reason>``.
    """
    cfg = node.config.ssh
    target = plan.target
    known_hosts_for(target)  # refuse before issuing anything if nothing is pinned
    try:
        sources, local_addr = await _source_addresses(target, cfg.source_addresses)
        now = node.clock()
        try:
            cert = node.ca.issue(
                principal=target.principal,
                key_id=plan.key_id,
                now=now,
                lifetime=cfg.certificate_lifetime,
                backdate=cfg.certificate_backdate,
                not_after=plan.not_after,
                source_addresses=sources,
                permit_pty=plan.permit_pty,
                permit_port_forwarding=plan.permit_port_forwarding,
                permit_agent_forwarding=plan.permit_agent_forwarding,
            )
        except ValueError as e:
            raise UpstreamError("grant-ended", str(e)) from e
        await node.call(
            node.store.record_certificate,
            CertificateRecord(
                serial=cert.serial,
                key_id=cert.key_id,
                principals=cert.principals,
                valid_after=cert.valid_after,
                valid_before=cert.valid_before,
                session_id=session_id,
                user_id=user.id,
                target_id=target.id,
                issued_at=now,
            ),
        )
        await node.audit(
            user.name,
            actions.CERTIFICATE_ISSUED,
            target.name,
            session=session_id,
            serial=cert.serial,
            key_id=cert.key_id,
            principals=list(cert.principals),
            valid_after=cert.valid_after,
            valid_before=cert.valid_before,
            source_address=list(sources),
        )
        conn = await _dial(plan, cert, local_addr, cfg.connect_timeout)
    except UpstreamError as e:
        await node.audit(
            user.name,
            actions.upstream_failure(e.reason),
            target.name,
            session=session_id,
            message=str(e),
            error=repr(e.__cause__) if e.__cause__ is not None else None,
        )
        raise
    return conn, cert
