"""Which address is the client's, and listeners behind a PROXY-protocol load balancer.

``client_address`` is the one place both listeners (SSH and PostgreSQL) learn
who they talk to: the address a trusted balancer forwarded when there is one,
the socket's peer otherwise. Everything downstream (per-source startup caps,
login and MFA limits, audit rows, session rows, alerts) reads what it returns.

``ProxyHeaderReader`` is the asyncio adapter around ``bastion.proxy_protocol``:
with ``proxy_protocol = true`` it is the protocol a listener accepts with. It
closes a connection from an address outside ``trusted_proxies`` at once, reads
the header within the login timeout (closing on a missing, truncated or bad
one), then moves the socket to the listener's own protocol with
``transport.set_protocol``: after the header it is out of the data path.
Refusals are logged, not audited, like the ``max_startups`` drops: they happen
before anyone has said who they are, and a flood must not fill the audit chain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, cast

from bastion.networks import Network
from bastion.proxy_protocol import Address, Header, Invalid, parse

__all__ = [
    "ForwardedProtocol",
    "ProxyHeaderReader",
    "accepting",
    "TrustedProxies",
    "client_address",
]

log = logging.getLogger(__name__)


def client_address(peername: object, forwarded: Address | None) -> tuple[str, str]:
    """(host, "host:port") of the client: ``forwarded`` by a trusted balancer, else the
    socket's ``peername``. The host keys per-source limits; the second is what logs,
    audit rows and session rows show."""
    if forwarded is not None:
        return forwarded[0], f"{forwarded[0]}:{forwarded[1]}"
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), f"{peername[0]}:{peername[1]}"
    if peername:
        return str(peername), str(peername)
    return "?", "?"


class TrustedProxies:
    """The balancers whose PROXY headers are believed."""

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, host: str) -> bool:
        """Is ``host`` (a socket peer address) inside one of the trusted blocks?"""
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


class ForwardedProtocol(Protocol):
    """A listener's protocol that takes the client address a balancer forwarded."""

    forwarded_peer: Address | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...


P = TypeVar("P", bound=ForwardedProtocol)


class ProxyHeaderReader(asyncio.Protocol):
    """One accepted connection until its PROXY header is read (see the module docstring)."""

    def __init__(
        self,
        inner: Callable[[], ForwardedProtocol],
        trusted: TrustedProxies,
        timeout: float,
        listener: str,
    ) -> None:
        self._inner = inner
        self._trusted = trusted
        self._timeout = timeout
        self._listener = listener
        self._buffer = b""
        self._peer = "?"
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse an untrusted peer at once; otherwise wait for the header."""
        self._transport = cast(asyncio.Transport, transport)
        host, self._peer = client_address(transport.get_extra_info("peername"), None)
        if not self._trusted.trusts(host):
            self._refuse(
                "untrusted-proxy",
                f"{host} is not in {self._listener}.trusted_proxies "
                "(connect through the load balancer, or add its address there)",
            )
            return
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        """Collect the header; hand over to the listener's protocol once it is complete."""
        if self._done:
            return
        self._buffer += data
        result = parse(self._buffer)
        if isinstance(result, Invalid):
            self._refuse(result.reason, result.message)
        elif isinstance(result, Header):
            self._hand_over(result)

    def eof_received(self) -> bool | None:
        """The balancer closed before the header was complete."""
        if not self._done:
            self._closed_early()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone before the header: nothing else to release."""
        if not self._done:
            self._closed_early()
        self._stop_timer()

    def _closed_early(self) -> None:
        if self._buffer:
            self._refuse("truncated", f"closed after {len(self._buffer)} bytes of a PROXY header")
            return
        # A balancer's TCP health check (connect, close): routine, not worth a warning.
        self._done = True
        self._stop_timer()
        log.debug(
            "%s: %s connected and closed without sending anything", self._listener, self._peer
        )
        if self._transport is not None:
            self._transport.close()

    def _hand_over(self, header: Header) -> None:
        assert self._transport is not None  # noqa: S101  set by connection_made
        self._done = True
        self._stop_timer()
        rest, self._buffer = self._buffer[header.length :], b""
        inner = self._inner()
        inner.forwarded_peer = header.source
        self._transport.set_protocol(cast(asyncio.BaseProtocol, inner))
        inner.connection_made(self._transport)
        if rest and not self._transport.is_closing():
            inner.data_received(rest)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._done:
            self._refuse(
                "truncated" if self._buffer else "no-header",
                f"no complete PROXY header within {self._timeout:g} s "
                f"({len(self._buffer)} bytes received; {self._listener}.login_timeout)",
            )

    def _refuse(self, reason: str, message: str) -> None:
        self._done = True
        self._stop_timer()
        log.warning(
            "%s: refused connection from %s: %s (%s)", self._listener, self._peer, message, reason
        )
        if self._transport is not None:
            self._transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def accepting(
    factory: Callable[[], P],
    *,
    proxy_protocol: bool,
    trusted: Sequence[Network],
    timeout: float,
    listener: str,
) -> Callable[[], asyncio.BaseProtocol]:
    """The protocol factory a listener passes to ``create_server``: its own, or its own
    behind a ``ProxyHeaderReader`` when ``proxy_protocol`` is on."""
    if not proxy_protocol:
        return cast(Callable[[], asyncio.BaseProtocol], factory)
    proxies = TrustedProxies(trusted)
    return lambda: ProxyHeaderReader(factory, proxies, timeout, listener)
