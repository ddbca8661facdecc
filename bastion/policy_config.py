"""``[policy]`` in the config file: what happens when no guardrail rule matches.

Kept apart from ``bastion.config`` (which calls ``parse_policy``), like
``requests_config``. The rules themselves live in the state store
(``bastion policy add``), so every node applies the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.errors import ConfigError
from bastion.timeparse import parse_duration

DEFAULTS = ("allow", "deny")
KNOWN_POLICY_KEYS = frozenset({"default", "hold_timeout"})


@dataclass(frozen=True)
class PolicyConfig:
    """The action when no rule matches, and how long a held command waits."""

    default: str = "allow"
    """``allow`` or ``deny``."""
    hold_timeout: float = 300.0
    """A command held by a ``hold`` rule and not approved within this is denied (lapsed)."""


def parse_policy(section: dict[str, Any]) -> PolicyConfig:
    """Read ``[policy]`` (raises ConfigError naming the setting)."""
    unknown = set(section) - KNOWN_POLICY_KEYS
    if unknown:
        raise ConfigError(f"unknown key [policy] {sorted(unknown)[0]}")
    default = section.get("default", "allow")
    if default not in DEFAULTS:
        raise ConfigError(f'policy.default must be "allow" or "deny", not {default!r}')
    raw = section.get("hold_timeout", "5m")
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0:
            timeout = float(raw)
        elif isinstance(raw, str):
            timeout = parse_duration(raw)
        else:
            raise ValueError(f"not {raw!r}")
    except ValueError as e:
        raise ConfigError(f'policy.hold_timeout must be a duration such as "5m": {e}') from e
    return PolicyConfig(default=str(default), hold_timeout=timeout)


CONFIG_TEMPLATE_SECTION = """
[policy]
# Guardrail rules live in the state store ('bastion policy add', 'bastion policy list').
# What a command, statement or file path no rule matches gets: "allow" or "deny".
default = "allow"
# A command held for approval is denied if nobody approves it within this.
hold_timeout = "5m"
"""
