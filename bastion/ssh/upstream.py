"""The bastion's own SSH client to a target: fresh certificate, pinned host key.

Every upstream connection gets a new key pair and a certificate scoped to the
target's principal, the grant's window and the bastion's source address. The
target's host key must match what the admin pinned (or be signed by a host CA
the admin named); there is no trust on first use here.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import asyncssh

from bastion.ca import CertificateAuthority, IssuedCertificate
from bastion.errors import AccessDenied, BastionError
from bastion.store.models import Target


class UpstreamError(BastionError):
    """The target could not be reached or refused the bastion; the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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


async def connect_upstream(
    ca: CertificateAuthority,
    plan: UpstreamPlan,
    *,
    now: float,
    lifetime: float,
    backdate: float,
    source_addresses: tuple[str, ...],
    connect_timeout: float,
) -> tuple[asyncssh.SSHClientConnection, IssuedCertificate]:
    """Issue a certificate and log in to the target with it.

    Raises UpstreamError with reason "host-key-mismatch", "refused" or "unreachable".
    """
    target = plan.target
    known_hosts = known_hosts_for(target)
    local_addr: tuple[str, int] | None = None
    if source_addresses:
        sources = source_addresses
        local_addr = (source_addresses[0], 0)
    else:
        try:
            detected = await asyncio.to_thread(route_source_address, target.host, target.port)
        except OSError as e:
            raise UpstreamError(
                "unreachable", f"cannot route to {target.name} ({target.host}:{target.port}): {e}"
            ) from e
        sources = (detected,)
        local_addr = (detected, 0)
    try:
        cert = ca.issue(
            principal=target.principal,
            key_id=plan.key_id,
            now=now,
            lifetime=lifetime,
            backdate=backdate,
            not_after=plan.not_after,
            source_addresses=sources,
            permit_pty=plan.permit_pty,
            permit_port_forwarding=plan.permit_port_forwarding,
            permit_agent_forwarding=plan.permit_agent_forwarding,
        )
    except ValueError as e:
        raise UpstreamError("grant-ended", str(e)) from e
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
        raise UpstreamError("unreachable", f"cannot connect to {where}: {e}") from e
    return conn, cert
