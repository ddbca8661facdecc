"""``trusted_proxies`` as the config reads it: addresses and CIDR blocks.

Apart from ``bastion.proxied`` (the listeners' asyncio side) so that reading the
config, which every CLI command does, does not import asyncio.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from bastion.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(values: Sequence[str], setting: str) -> tuple[Network, ...]:
    """Parse a ``trusted_proxies`` list (addresses or CIDR blocks); errors name the entry."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError as e:
            raise ConfigError(
                f"{setting}: '{value}' is not an address or CIDR block "
                f"(examples: 10.0.0.5, 10.0.0.0/24, fd00::/64): {e}"
            ) from None
    return tuple(out)
