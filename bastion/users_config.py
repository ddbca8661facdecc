"""``[users]`` in the config file: what every user record must carry.

Kept apart from ``bastion.config`` (which calls ``parse_users``) like
``[requests]``. Today one rule: a contractor needs an end date, so access cannot
outlive an engagement because somebody forgot to remove an account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.errors import ConfigError

KNOWN_USERS_KEYS = frozenset({"require_end_date"})


@dataclass(frozen=True)
class UsersConfig:
    """Rules for user records, enforced by ``bastion user add`` (and ``apply``)."""

    require_end_date: bool = True
    """A contractor without ``--until`` is refused (the store itself does not check)."""


def parse_users(section: dict[str, Any]) -> UsersConfig:
    """``[users]`` as a UsersConfig (raises ConfigError naming a bad value)."""
    value = section.get("require_end_date", True)
    if not isinstance(value, bool):
        raise ConfigError(f"users.require_end_date must be true or false, not {value!r}")
    return UsersConfig(require_end_date=value)


CONFIG_TEMPLATE_SECTION = """
[users]
# A contractor must be added with an end date (bastion user add NAME --sponsor S
# --until DATE): at that second they are disabled, their sessions end and their
# tokens and pending requests are revoked. false allows open-ended contractors.
require_end_date = true
"""
