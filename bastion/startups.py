"""Connections still logging in, capped in total and per source address.

Both listeners (SSH and PostgreSQL) admit a connection here at accept, before
anything is allocated for it, and release its slot once it has logged in or is
gone. The per-source cap is OpenSSH's ``PerSourceMaxStartups``: one address
(IPv4 /32, IPv6 /64, as OpenSSH's default ``PerSourceNetBlockSize``) cannot
fill the shared cap with idle connections and lock everyone else out.

A ``Slot`` is the only way to count: it is taken only when admitted and
released at most once, so no path can decrement what was never counted.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Slot", "StartupLimits", "source_of"]

IPV6_PREFIX = 64
"""IPv6 sources are counted per /64 (one host usually holds a whole /64)."""


def source_of(host: str) -> str:
    """The block an address counts against: the IPv4 address, or its IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # a Unix socket or an unknown peer: counted as itself
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass
class Slot:
    """One admitted connection's place; ``release`` is idempotent."""

    limits: StartupLimits
    source: str
    held: bool = True

    def release(self) -> None:
        """Free the place (logged in, refused later, timed out or gone)."""
        if self.held:
            self.held = False
            self.limits._release(self.source)


@dataclass
class StartupLimits:
    """The logins in progress of one listener."""

    max_total: int
    per_source: int
    _by_source: Counter[str] = field(default_factory=Counter)
    in_progress: int = 0

    def admit(self, host: str) -> Slot | str:
        """A slot for a new connection from ``host``, or why it is refused."""
        source = source_of(host)
        if self.in_progress >= self.max_total:
            return f"{self.in_progress} connections are already logging in (max_startups)"
        if self.per_source and self._by_source[source] >= self.per_source:
            return (
                f"{self._by_source[source]} connections from {source} are already logging in "
                "(per_source_max_startups)"
            )
        self.in_progress += 1
        self._by_source[source] += 1
        return Slot(self, source)

    def from_source(self, host: str) -> int:
        """Logins in progress from ``host``'s block (for tests and the log)."""
        return self._by_source[source_of(host)]

    def _release(self, source: str) -> None:
        self.in_progress -= 1
        self._by_source[source] -= 1
        if self._by_source[source] <= 0:
            del self._by_source[source]
