"""``[login_limits]`` in the config file: per-address failure limits and penalties.

Kept apart from ``bastion.config`` (which calls ``parse_login_limits``) like
``[users]``. Two answers to guessing spread over many user names:

* *address blocks* (state DB, so every node sharing it sees them): a source
  whose logins fail ``address_max_failures`` times within ``address_window``
  seconds, whatever the user names, is refused for ``address_block`` seconds,
  doubling with each block up to ``address_block_max``; ``bastion lockouts``
  lists them and ``bastion lockouts unblock`` lifts one;
* *penalties* (in memory, per node, cheap at accept): ``bastion.penalties``.

The per-user lockout stays in ``[mfa]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.errors import ConfigError
from bastion.penalties import (
    DEFAULT_PENALTIES,
    Network,
    PenaltyPolicy,
    parse_exempt,
    parse_penalties,
)

KNOWN_LOGIN_LIMITS_KEYS = frozenset(
    {
        "address_max_failures",
        "address_window",
        "address_block",
        "address_block_max",
        "penalties",
        "penalty_exempt",
    }
)
STRIKES_FORGOTTEN = 86400.0
"""A source's earlier blocks stop doubling the next one a day after the last ended."""


@dataclass(frozen=True)
class LoginLimitsConfig:
    """Per-address failure limits (state DB) and per-source penalties (memory)."""

    address_max_failures: int = 20
    """Failed logins from one source within ``address_window`` before it is blocked; 0: off."""
    address_window: float = 600.0
    address_block: float = 60.0
    """The first block's length; each further block doubles it."""
    address_block_max: float = 3600.0
    penalties: PenaltyPolicy = field(default_factory=PenaltyPolicy)
    penalty_exempt: tuple[Network, ...] = ()


def _seconds(section: dict[str, Any], key: str, default: float) -> float:
    value: object = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"login_limits.{key} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def parse_login_limits(section: dict[str, Any]) -> LoginLimitsConfig:
    """``[login_limits]`` as a LoginLimitsConfig (raises ConfigError naming a bad value)."""
    penalties = section.get("penalties", DEFAULT_PENALTIES)
    if not isinstance(penalties, str):
        raise ConfigError(
            f'login_limits.penalties must be a string such as "{DEFAULT_PENALTIES}" or "no"'
        )
    exempt = section.get("penalty_exempt", [])
    if not isinstance(exempt, list) or not all(isinstance(e, str) for e in exempt):
        raise ConfigError('login_limits.penalty_exempt must be a list of networks ("10.0.0.0/8")')
    return LoginLimitsConfig(
        address_max_failures=int(_seconds(section, "address_max_failures", 20)),
        address_window=_seconds(section, "address_window", 600),
        address_block=_seconds(section, "address_block", 60),
        address_block_max=_seconds(section, "address_block_max", 3600),
        penalties=parse_penalties(penalties, "login_limits.penalties"),
        penalty_exempt=parse_exempt(tuple(exempt), "login_limits.penalty_exempt"),
    )


CONFIG_TEMPLATE_SECTION = f"""
[login_limits]
# Guessing spread over many user names: a source (an IPv4 address or an IPv6 /64)
# whose SSH or PostgreSQL logins fail address_max_failures times within
# address_window seconds, whatever the users, is refused for address_block
# seconds, doubling with each further block up to address_block_max. Kept in the
# state database, so it holds across the nodes that share it. 'bastion lockouts'
# lists blocked sources and locked users; 'bastion lockouts unblock ADDRESS' lifts
# a block. 0 = no per-address limit (the per-user [mfa] lockout still applies).
address_max_failures = 20
address_window = 600
address_block = 60
address_block_max = 3600
# Per-source penalties, as OpenSSH's PerSourcePenalties (both listeners, kept in
# this node's memory): seconds a source accrues when a connection ends without a
# login (authfail: it tried and failed; grace-exceeded: it sat out login_grace;
# noauth: it left without trying); once min seconds have accrued the source is
# refused at accept until they run out, and each repeat within max seconds
# doubles the period (at most max). "no" turns penalties off.
penalties = "{DEFAULT_PENALTIES}"
# Networks never penalised (load-balancer health checks, monitoring).
penalty_exempt = []
"""
